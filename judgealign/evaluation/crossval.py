"""K-fold cross-validation of judge alignment: the proof behind every claim of judgealign.

For each fold ``f`` and each variant (``baseline``, ``memalign``, the ablations, the DSPy
baselines) a fresh judge is aligned on the items of the OTHER folds only, then judges the
items of fold ``f``; every item is therefore judged exactly once per variant, by a judge that
never saw its labels. A leakage guard checks this after each alignment and raises if a
held-out item reached the judge's memory, a guideline's sources, or its seen-episode ledger.

Per dimension and variant, :func:`~judgealign.evaluation.metrics.agreement` is computed over
all held-out predictions pooled across folds, and every variant is compared with
``baseline`` by :func:`~judgealign.evaluation.bootstrap.paired_bootstrap` on the per-item
absolute errors, resampling items (one resample serves every dimension).

Folds (:func:`assign_folds`)
----------------------------
Folds partition ITEMS, never labels: all dimensions and all raters of an item stay in one
fold. The unique item ids are sorted, shuffled with ``random.Random(seed)``, then stably
sorted by the item's mean aggregated reference score (over its numeric dimensions; items
with none come first), and dealt in consecutive blocks of ``k``: each block gives one item
to every fold, in an order drawn from the same generator. Fold sizes differ by at most one
and every fold gets a similar spread of scores (stratification), while the seed decides
which of two similar items goes where. Items with identical inputs under different ids (the
same snippet graded for two systems, say) are one unit: they always share a fold, so a
duplicate of a held-out item never sits in training.

Checkpoints
-----------
With ``checkpoint_dir``, each finished (fold, variant) writes its per-item records and costs
to ``checkpoint_dir/folds/fold{f}-{variant}.json`` (atomically). With ``resume=True`` a file
is reused when its fingerprint -- a hash of the rubric, the labels' content, the folds, the
seed, the variant, the judge and reflection LMs' identities and call settings, the embedder,
``k``, the demo budget, the MemAlign options and the judgealign/DSPy versions -- matches;
anything else is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from judgealign.errors import JudgeAlignError
from judgealign.evaluation.bootstrap import paired_bootstrap
from judgealign.evaluation.metrics import Agreement, abs_errors, agreement
from judgealign.labels import LabelSet

BASELINE = "baseline"
MEMALIGN_VARIANTS = {"memalign": (True, True), "semantic-only": (True, False),
                     "episodic-only": (False, True)}
KNOWN_VARIANTS = (BASELINE, *MEMALIGN_VARIANTS, "labeled-fewshot", "knn-fewshot",
                  "bootstrap-fewshot", "mipro", "simba", "gepa")
CHECKPOINT_FORMAT = 1

OptimizerFactory = Callable[[str], Any]


class LeakageError(JudgeAlignError):
    """A judge aligned for a fold knows an item of that fold's held-out set."""


# --- folds -------------------------------------------------------------------------------------


def assign_folds(item_ids: Iterable[str], k: int, seed: int = 0,
                 labels: LabelSet | None = None) -> dict[str, int]:
    """Assign each item to one of ``k`` folds (see the module docstring for the scheme).

    Parameters
    ----------
    item_ids
        Item ids; duplicates are ignored and their order does not matter.
    k
        Number of folds, ``2 <= k <= n_items``.
    seed
        Seed of the shuffle; the same ids and seed always give the same folds.
    labels
        When given, folds are stratified by each item's mean aggregated reference score.

    Returns
    -------
    dict
        ``item_id -> fold`` (0-based), sorted by item id.
    """
    ids = sorted(set(item_ids))
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"folds must be an int >= 2, got {k!r}")
    groups = _content_groups(ids, labels)
    keys = sorted(groups)
    if len(keys) < k:
        raise ValueError(f"{k} folds need at least {k} distinct items, got {len(keys)}")
    rng = random.Random(seed)
    rng.shuffle(keys)
    if labels is not None:
        means = _mean_reference(labels)
        group_mean = {g: float(np.mean([means[i] for i in groups[g] if i in means]))
                      if any(i in means for i in groups[g]) else -math.inf for g in keys}
        # Stable sort: groups of equal mean keep their shuffled order.
        keys.sort(key=lambda g: group_mean[g])
    folds: dict[str, int] = {}
    for start in range(0, len(keys), k):
        order = list(range(k))
        rng.shuffle(order)  # so fold 0 is not always the lowest of each block
        for key, fold in zip(keys[start:start + k], order, strict=False):
            for item in groups[key]:
                folds[item] = fold
    return dict(sorted(folds.items()))


def _content_groups(ids: list[str], labels: LabelSet | None) -> dict[str, list[str]]:
    """Items whose inputs are identical (one text under several ids) form one group, so a
    copy of a held-out item can never sit in the training folds."""
    if labels is None:
        return {i: [i] for i in ids}
    from judgealign.items import item_id_for

    inputs = labels.items()
    groups: dict[str, list[str]] = {}
    for i in ids:
        key = item_id_for(inputs[i]) if i in inputs else i
        groups.setdefault(key, []).append(i)
    return groups


def _mean_reference(labels: LabelSet) -> dict[str, float]:
    scores: dict[str, list[int]] = {}
    for e in labels.episodes():
        if e.score is not None:
            scores.setdefault(e.item_id, []).append(e.score)
    return {i: float(np.mean(s)) for i, s in scores.items()}


# --- results -----------------------------------------------------------------------------------


@dataclass
class ItemRecord:
    """One held-out judgment: the judge's score and the aggregated expert score."""

    item_id: str
    fold: int
    dimension: str
    variant: str
    human: int | None
    judge: int | None
    failed: bool = False
    rationale: str = ""
    retrieved_ids: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunCost:
    """Cost of one (fold, variant): aligning on the training folds, judging the held-out one.

    ``align_*`` counts every call of the judge and reflection LMs while compiling (MemAlign's
    reflection calls, BootstrapFewShot's judge runs); ``judge_*`` the held-out judgments.
    ``reused`` is True when the run was read back from a checkpoint (its numbers are those of
    the run that wrote it).
    """

    fold: int
    variant: str
    align_calls: int = 0
    align_prompt_tokens: int = 0
    align_completion_tokens: int = 0
    align_seconds: float = 0.0
    judge_calls: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    judge_seconds: float = 0.0
    train_items: int = 0
    test_items: int = 0
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["align_seconds"] = round(self.align_seconds, 3)
        data["judge_seconds"] = round(self.judge_seconds, 3)
        return data


@dataclass
class CVResult:
    """Everything a cross-validation produced; ``to_dict()`` is strictly JSON-able.

    Attributes
    ----------
    settings
        How the run was made: rubric, folds, seed, variants, LMs, k, bootstrap resamples ...
    folds
        ``item_id -> fold``.
    dimensions, variants
        Evaluated dimensions (rubric order) and variants that ran (requested order).
    records
        Every held-out judgment (one per variant x item x labelled dimension).
    agreement
        ``(variant, dimension) -> Agreement`` over the pooled held-out items.
    mae
        One dict per (variant, dimension): ``mae`` over the items the variant scored, its
        bootstrap CI (``ci_low``, ``ci_high``) and ``n`` -- the error bars of the figure.
    comparisons
        One dict per (variant != baseline, dimension): the paired bootstrap record of
        ``variant - baseline`` (negative ``diff``: the variant errs less).
    costs
        One :class:`RunCost` per (fold, variant).
    skipped
        ``variant -> reason`` for requested variants that could not run.
    align_reports
        ``(variant, fold) -> compile report dict`` (MemAlign's guidelines, episodes ...).
    data
        A summary of the data set: items, labels, raters, per-dimension score counts.
    """

    settings: dict[str, Any]
    folds: dict[str, int]
    dimensions: list[str]
    variants: list[str]
    records: list[ItemRecord]
    agreement: dict[tuple[str, str], Agreement]
    mae: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    costs: list[RunCost]
    skipped: dict[str, str] = field(default_factory=dict)
    align_reports: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline(self) -> str | None:
        return BASELINE if BASELINE in self.variants else None

    def comparison(self, variant: str, dimension: str) -> dict[str, Any] | None:
        """The paired bootstrap record of ``variant`` vs baseline on ``dimension``."""
        return next((c for c in self.comparisons
                     if c["variant"] == variant and c["dimension"] == dimension), None)

    def mae_of(self, variant: str, dimension: str) -> dict[str, Any] | None:
        return next((m for m in self.mae
                     if m["variant"] == variant and m["dimension"] == dimension), None)

    def cost_totals(self) -> dict[str, dict[str, float]]:
        """Per variant, the sum of every numeric cost field over its folds."""
        out: dict[str, dict[str, float]] = {}
        for c in self.costs:
            row = out.setdefault(c.variant, {})
            for key, value in c.to_dict().items():
                if key not in ("fold", "variant", "reused"):
                    row[key] = row.get(key, 0) + value
        return {v: out[v] for v in self.variants if v in out}

    def to_dict(self) -> dict[str, Any]:
        data = {
            "settings": self.settings,
            "folds": dict(sorted(self.folds.items())),
            "dimensions": list(self.dimensions),
            "variants": list(self.variants),
            "skipped": dict(self.skipped),
            "data": self.data,
            "agreement": [{"variant": v, "dimension": d, **a.to_dict()}
                          for (v, d), a in self.agreement.items()],
            "mae": self.mae,
            "comparisons": self.comparisons,
            "costs": [c.to_dict() for c in self.costs],
            "cost_totals": self.cost_totals(),
            "align_reports": [{"variant": v, "fold": f, "report": r}
                              for (v, f), r in sorted(self.align_reports.items())],
            "records": [r.to_dict() for r in self.records],
        }
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    """Plain JSON data: NaN/inf become None, numpy scalars and tuples become Python ones."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


# --- optimizers --------------------------------------------------------------------------------


def default_optimizer_factory(*, lm: Any, reflection_lm: Any = None, embedder: Any = None,
                              k: int = 3, demo_input_tokens: int = 350, seed: int = 0,
                              progress: bool = False,
                              memalign_options: Mapping[str, Any] | None = None
                              ) -> OptimizerFactory:
    """The optimizers behind the built-in variant names.

    Returns a function ``variant -> optimizer`` (a fresh one per call; ``None`` for
    ``baseline``, which is not aligned). It raises
    :class:`~judgealign.optimizers.baselines.UnsupportedBaseline` for ``mipro``, ``simba`` and
    ``gepa`` and ValueError for unknown names.
    """
    from judgealign.optimizers.baselines import (
        FEWSHOT_BASELINES,
        UNSUPPORTED_BASELINES,
        FewShotBaseline,
        UnsupportedBaseline,
        unsupported_reason,
    )
    from judgealign.optimizers.memalign import MemAlign

    options = dict(memalign_options or {})

    def factory(variant: str) -> Any:
        if variant == BASELINE:
            return None
        if variant in MEMALIGN_VARIANTS:
            semantic, episodic = MEMALIGN_VARIANTS[variant]
            return MemAlign(reflection_lm=reflection_lm or lm, embedder=embedder,
                            semantic=semantic, episodic=episodic, k=k,
                            demo_input_tokens=demo_input_tokens, progress=progress, **options)
        if variant in FEWSHOT_BASELINES:
            return FewShotBaseline(variant, lm=lm, k=k, demo_input_tokens=demo_input_tokens,
                                   embedder=embedder, seed=seed)
        if variant in UNSUPPORTED_BASELINES:
            raise UnsupportedBaseline(unsupported_reason(variant))
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(KNOWN_VARIANTS)}")

    return factory


# --- leakage -----------------------------------------------------------------------------------


def check_no_leakage(judge: Any, held_out: Iterable[str], *, where: str = "") -> None:
    """Raise :class:`LeakageError` if the aligned ``judge`` knows any held-out item.

    Looked at: the item ids of the judge's (and each dimension's) memory, every guideline's
    ``sources`` (kept and rejected), the keys of ``judge.seen`` (``item_id::dimension``) and
    the ``item_id`` of any demo stored on a predictor.
    """
    held = set(held_out)
    found: dict[str, set[str]] = {}

    def note(kind: str, ids: Iterable[str]) -> None:
        bad = held & {str(i) for i in ids}
        if bad:
            found.setdefault(kind, set()).update(bad)

    memories = [getattr(judge, "memory", None)]
    for djudge in getattr(judge, "judges", {}).values():
        memories.append(getattr(djudge, "memory", None))
        for g in [*djudge.guidelines, *getattr(djudge, "rejected", [])]:
            note("guideline sources", g.sources)
        note("predictor demos", [d.get("item_id") for d in djudge.predict.demos
                                 if d.get("item_id") is not None])
    for memory in {id(m): m for m in memories if m is not None}.values():
        note("episodic memory", memory.item_ids())
    note("seen episodes", [key.split("::", 1)[0] for key in getattr(judge, "seen", {})])
    if found:
        detail = "; ".join(f"{kind}: {', '.join(sorted(ids)[:10])}"
                           for kind, ids in sorted(found.items()))
        raise LeakageError(f"held-out items reached the aligned judge{where} -- {detail}")


# --- the run -----------------------------------------------------------------------------------


def cross_validate(program: Any, labels: LabelSet, *,
                   variants: Sequence[str] = (BASELINE, "memalign"), folds: int = 4,
                   seed: int = 0, lm: Any = None, reflection_lm: Any = None,
                   embedder: Any = None, dimensions: Sequence[str] | None = None,
                   limit: int | None = None, n_bootstrap: int = 10_000, k: int = 3,
                   progress: bool = True, checkpoint_dir: str | Path | None = None,
                   optimizer_factory: OptimizerFactory | None = None, resume: bool = False,
                   demo_input_tokens: int = 350,
                   memalign_options: Mapping[str, Any] | None = None) -> CVResult:
    """Cross-validate alignment variants of a rubric judge against expert labels.

    Parameters
    ----------
    program
        A rubric (a :class:`Rubric`, a built-in name or a rubric file), an unaligned
        :class:`RubricJudge` (copied per fold), or a function returning a fresh one.
    labels
        Expert labels; validated against the rubric.
    variants
        Built-in: ``baseline`` (not aligned), ``memalign``, ``semantic-only``,
        ``episodic-only``, ``labeled-fewshot``, ``knn-fewshot``, ``bootstrap-fewshot``;
        ``mipro``, ``simba``, ``gepa`` are reported as skipped with the reason. With
        ``optimizer_factory`` any name it accepts. Default ``("baseline", "memalign")``.
    folds
        K, the number of folds (>= 2). Default 4.
    seed
        Seeds the folds, the bootstrap and the baselines' example order. Default 0.
    lm
        The judge LM; default the program's LM, else DSPy's configured LM.
    reflection_lm
        MemAlign's reflection LM; default ``lm``.
    embedder
        Embeds items for episodic memory and knn-fewshot; default :class:`HashingEmbedder`.
    dimensions
        Dimension ids to evaluate; default every dimension that has labels.
    limit
        Use only the first ``limit`` items, in the order the labels list them.
    n_bootstrap
        Bootstrap resamples. Default 10,000.
    k
        Demos per judgment, the same for every variant that shows demos. Default 3.
    progress
        Show progress bars (fold x variant, alignment, judging).
    checkpoint_dir, resume
        Write each finished (fold, variant) to ``checkpoint_dir/folds/``; with ``resume``
        reuse those whose fingerprint matches (see the module docstring). A custom
        ``optimizer_factory`` or program factory is not part of the fingerprint: give a new
        ``checkpoint_dir`` when you change one.
    optimizer_factory
        ``variant -> optimizer`` (anything with ``compile(student, trainset=LabelSet)``, or
        ``None`` for no alignment); called once per fold and variant. Default
        :func:`default_optimizer_factory`.
    demo_input_tokens
        Token budget of each demo's item text, for MemAlign and the DSPy baselines alike.
    memalign_options
        Further :class:`MemAlign` arguments (``max_guidelines``, ``batch_examples``,
        ``dedup_threshold``, ``grounding``).

    Returns
    -------
    CVResult
    """
    import dspy

    from judgealign.memory.embedders import HashingEmbedder
    from judgealign.optimizers.baselines import UnsupportedBaseline

    factory, rubric = _program_factory(program, lm=lm, k=k, demo_input_tokens=demo_input_tokens)
    probe = factory()
    lm = lm or probe.get_lm() or dspy.settings.lm
    if lm is None:
        raise JudgeAlignError("cross_validate needs a judge LM: pass lm= or give the program "
                              "one (or call dspy.configure)")
    reflection_lm = reflection_lm or lm
    embedder = embedder or HashingEmbedder()
    labels, dims = _select(labels, rubric, dimensions, limit)
    variants = list(dict.fromkeys(variants))
    if not variants:
        raise ValueError("no variants to evaluate")
    if optimizer_factory is None:
        unknown = [v for v in variants if v not in KNOWN_VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(KNOWN_VARIANTS)}")
        optimizer_factory = default_optimizer_factory(
            lm=lm, reflection_lm=reflection_lm, embedder=embedder, k=k,
            demo_input_tokens=demo_input_tokens, seed=seed, progress=progress,
            memalign_options=memalign_options)
    fold_of = assign_folds(labels.item_ids, folds, seed, labels=labels)
    settings = _settings(rubric, labels, dims, variants, folds, seed, limit, n_bootstrap, k,
                         demo_input_tokens, lm, reflection_lm, embedder, memalign_options)
    references = {d: labels.reference(d) for d in dims}
    store = _Checkpoints(checkpoint_dir, resume)

    records: list[ItemRecord] = []
    costs: list[RunCost] = []
    reports: dict[tuple[str, int], dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    bar = _bar(folds * len(variants), progress)
    for fold in range(folds):
        train_ids = [i for i in labels.item_ids if fold_of[i] != fold]
        test_ids = [i for i in labels.item_ids if fold_of[i] == fold]
        for variant in variants:
            bar.set_postfix_str(f"fold {fold + 1}/{folds}, {variant}")
            if variant in skipped:
                bar.update(1)
                continue
            fingerprint = _fingerprint(settings, fold_of, variant, fold)
            saved = store.load(fold, variant, fingerprint)
            if saved is not None:
                run_records, cost, report = saved
            else:
                try:
                    optimizer = optimizer_factory(variant)
                except UnsupportedBaseline as exc:
                    skipped[variant] = str(exc)
                    bar.update(1)
                    continue
                with dspy.context(lm=lm):
                    run_records, cost, report = _run_fold(
                        factory, optimizer, labels, references, dims, train_ids, test_ids,
                        fold, variant, lm, reflection_lm, progress)
                store.save(fold, variant, fingerprint, run_records, cost, report)
            records += run_records
            costs.append(cost)
            if report is not None:
                reports[(variant, fold)] = report
            bar.update(1)
    bar.close()

    ran = [v for v in variants if v not in skipped]
    order = {v: i for i, v in enumerate(ran)}
    dim_order = {d: i for i, d in enumerate(dims)}
    records.sort(key=lambda r: (order[r.variant], dim_order[r.dimension], r.fold, r.item_id))
    agreement_by, mae, comparisons = _analyse(records, ran, dims, labels.item_ids, rubric.scale,
                                              n_bootstrap, seed)
    settings["skipped"] = dict(skipped)
    return CVResult(settings=settings, folds=fold_of, dimensions=dims, variants=ran,
                    records=records, agreement=agreement_by, mae=mae, comparisons=comparisons,
                    costs=sorted(costs, key=lambda c: (order[c.variant], c.fold)),
                    skipped=skipped, align_reports=reports,
                    data=_data_summary(labels, dims, fold_of, folds))


def _program_factory(program: Any, *, lm: Any, k: int, demo_input_tokens: int
                     ) -> tuple[Callable[[], Any], Any]:
    from judgealign.program import RubricJudge
    from judgealign.signatures.rubric import Rubric, resolve_rubric

    if isinstance(program, RubricJudge):
        aligned = (program.memory is not None or program.seen
                   or any(j.guidelines for j in program.judges.values()))
        if aligned:
            raise ValueError("cross_validate needs an unaligned judge (it aligns one per fold); "
                             "pass the rubric or a fresh RubricJudge")
        return program.deepcopy, program.rubric
    if isinstance(program, Rubric | str | Path):
        rubric = resolve_rubric(program)

        def fresh() -> Any:
            return RubricJudge(rubric, lm=lm, k=k, demo_input_tokens=demo_input_tokens)

        return fresh, rubric
    if callable(program):
        sample = program()
        if not isinstance(sample, RubricJudge):
            raise TypeError(f"the program factory must return a RubricJudge, got "
                            f"{type(sample).__name__}")
        return program, sample.rubric
    raise TypeError(f"program must be a rubric, a RubricJudge or a factory, got "
                    f"{type(program).__name__}")


def _select(labels: LabelSet, rubric: Any, dimensions: Sequence[str] | None,
            limit: int | None) -> tuple[LabelSet, list[str]]:
    labels = labels.validate(rubric)
    if dimensions:
        dims = list(dict.fromkeys(rubric.dimension(d).id for d in dimensions))
    else:
        dims = [d for d in rubric.dimension_ids if d in set(labels.dimensions)]
    labels = labels.for_dimensions(dims)
    missing = [d for d in dims if d not in set(labels.dimensions)]
    if missing:
        raise JudgeAlignError(f"no labels for dimension(s) {missing}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        labels = labels.subset(labels.item_ids[:limit])
        gone = [d for d in dims if d not in set(labels.dimensions)]
        if gone and dimensions:
            raise JudgeAlignError(f"the first {limit} items have no labels for dimension(s) "
                                  f"{gone}; raise the limit or drop them")
        dims = [d for d in dims if d not in gone]
    if not len(labels):
        raise JudgeAlignError("no labels left to cross-validate")
    return labels, dims


def _run_fold(factory: Callable[[], Any], optimizer: Any, labels: LabelSet,
              references: Mapping[str, Mapping[str, int | None]], dims: list[str],
              train_ids: list[str], test_ids: list[str], fold: int, variant: str, lm: Any,
              reflection_lm: Any, progress: bool
              ) -> tuple[list[ItemRecord], RunCost, dict[str, Any] | None]:
    """Align one variant on the training folds, check for leakage, judge the held-out fold."""
    from judgealign.optimizers.memalign import CostMeter

    cost = RunCost(fold, variant, train_items=len(train_ids), test_items=len(test_ids))
    student = factory()
    report = None
    if optimizer is None:
        judge = student
    else:
        meters = [CostMeter(m) for m in {id(lm): lm, id(reflection_lm): reflection_lm}.values()]
        started = time.perf_counter()
        for meter in meters:
            meter.__enter__()
        try:
            judge = optimizer.compile(student, trainset=labels.subset(train_ids))
        finally:
            for meter in meters:
                meter.__exit__(None, None, None)
        cost.align_seconds = time.perf_counter() - started
        cost.align_calls = sum(m.calls for m in meters)
        cost.align_prompt_tokens = sum(m.prompt_tokens for m in meters)
        cost.align_completion_tokens = sum(m.completion_tokens for m in meters)
        to_dict = getattr(getattr(judge, "report", None), "to_dict", None)
        report = to_dict() if callable(to_dict) else None
    check_no_leakage(judge, test_ids, where=f" (fold {fold}, variant {variant!r})")

    items = labels.items()
    # Only (item, dimension) pairs with a reference are judged; group the items by the set of
    # dimensions they need so that usually one batch (dimension-major) covers the fold.
    groups: dict[tuple[str, ...], list[str]] = {}
    for item_id in test_ids:
        need = tuple(d for d in dims if item_id in references[d])
        if need:
            groups.setdefault(need, []).append(item_id)
    out: list[ItemRecord] = []
    with CostMeter(lm) as meter:
        for need, ids in groups.items():
            results = judge.batch([items[i] for i in ids], item_ids=ids, dimensions=list(need),
                                  progress=progress)
            for item_id, result in zip(ids, results, strict=True):
                for dim in need:
                    r = result[dim]
                    out.append(ItemRecord(item_id, fold, dim, variant, references[dim][item_id],
                                          r.score, r.failed, r.rationale, list(r.retrieved_ids),
                                          r.error))
    cost.judge_calls, cost.judge_seconds = meter.calls, meter.seconds
    cost.judge_prompt_tokens, cost.judge_completion_tokens = (meter.prompt_tokens,
                                                              meter.completion_tokens)
    return out, cost, report


# --- analysis ----------------------------------------------------------------------------------


def _analyse(records: list[ItemRecord], variants: list[str], dims: list[str],
             item_ids: list[str], levels: list[int], n_bootstrap: int, seed: int
             ) -> tuple[dict[tuple[str, str], Agreement], list[dict[str, Any]],
                        list[dict[str, Any]]]:
    """Pooled agreement per (variant, dim); per-variant MAE CIs; paired comparisons."""
    col = {i: n for n, i in enumerate(item_ids)}
    by_key = {(r.variant, r.dimension, r.item_id): r for r in records}
    agreement_by: dict[tuple[str, str], Agreement] = {}
    errors: dict[str, np.ndarray] = {}
    for v in variants:
        err = np.full((len(dims), len(item_ids)), np.nan)  # (n_dims, n_items)
        for d_index, dim in enumerate(dims):
            rows = [by_key[(v, dim, i)] for i in item_ids if (v, dim, i) in by_key]
            human = [r.human for r in rows]
            judged = [r.judge for r in rows]
            failed = [bool(r.failed) for r in rows]
            agreement_by[(v, dim)] = agreement(human, judged, levels=levels, failed=failed)
            e, _ = abs_errors(human, judged, failed)
            for r, value in zip(rows, e, strict=True):
                err[d_index, col[r.item_id]] = value
        errors[v] = err
    mae: list[dict[str, Any]] = []
    for v in variants:
        # A variant against itself: the "a" side is the plain bootstrap of its own MAE, from
        # the same resampled item indices as every comparison.
        own = paired_bootstrap(errors[v], errors[v], n_resamples=n_bootstrap, seed=seed)
        for dim, rec in zip(dims, own.to_records(), strict=True):
            mae.append({"variant": v, "dimension": dim, "mae": rec["mae_a"],
                        "ci_low": rec["mae_a_ci_low"], "ci_high": rec["mae_a_ci_high"],
                        "n": rec["n_items_paired"], "confidence": rec["confidence"]})
    comparisons: list[dict[str, Any]] = []
    if BASELINE in variants:
        for v in variants:
            if v == BASELINE:
                continue
            result = paired_bootstrap(errors[BASELINE], errors[v], n_resamples=n_bootstrap,
                                      seed=seed)
            for d_index, rec in enumerate(result.to_records()):
                rec.pop("dim")
                comparisons.append({"variant": v, "reference": BASELINE,
                                    "dimension": dims[d_index], **rec})
    return agreement_by, mae, comparisons


def _data_summary(labels: LabelSet, dims: list[str], fold_of: Mapping[str, int],
                  k: int) -> dict[str, Any]:
    from judgealign.signatures.rubric import format_score

    raters = {lab.rater for lab in labels if lab.rater is not None}
    per_dim: dict[str, dict[str, int]] = {}
    for dim in dims:
        counts: dict[str, int] = {}
        for score in labels.reference(dim).values():
            counts[format_score(score)] = counts.get(format_score(score), 0) + 1
        per_dim[dim] = dict(sorted(counts.items()))
    sizes = [sum(1 for f in fold_of.values() if f == i) for i in range(k)]
    return {"items": len(labels.item_ids), "labels": len(labels), "raters": len(raters),
            "fold_sizes": sizes, "reference_scores": per_dim}


# --- settings, fingerprints, checkpoints --------------------------------------------------------


def _lm_identity(lm: Any) -> dict[str, Any]:
    """The LM's identity plus the call settings that change its answers (no secrets)."""
    from judgealign.lm import lm_context_window, lm_identity

    kwargs = {k: v for k, v in sorted((getattr(lm, "kwargs", None) or {}).items())
              if not k.startswith("api_") and isinstance(v, str | int | float | bool)}
    return {**lm_identity(lm), "kwargs": kwargs, "context_window": lm_context_window(lm)}


def _embedder_identity(embedder: Any) -> Any:
    ident = getattr(embedder, "identity", None)
    return ident() if callable(ident) else type(embedder).__name__


def _settings(rubric: Any, labels: LabelSet, dims: list[str], variants: list[str], folds: int,
              seed: int, limit: int | None, n_bootstrap: int, k: int, demo_input_tokens: int,
              lm: Any, reflection_lm: Any, embedder: Any,
              memalign_options: Mapping[str, Any] | None) -> dict[str, Any]:
    return _jsonable({
        "rubric": rubric.name,
        "rubric_sha256": _sha(rubric.model_dump(mode="json")),
        "labels_sha256": labels_fingerprint(labels),
        "dimensions": dims, "dimension_names": {d: rubric.dimension(d).name for d in dims},
        "scale": list(rubric.scale), "variants": variants, "folds": folds, "seed": seed,
        "limit": limit, "n_bootstrap": n_bootstrap, "confidence": 0.95, "k": k,
        "demo_input_tokens": demo_input_tokens,
        "lm": _lm_identity(lm), "reflection_lm": _lm_identity(reflection_lm),
        "embedder": _embedder_identity(embedder),
        "memalign_options": {key: repr(v) for key, v in (memalign_options or {}).items()},
        "versions": _versions(),
    })


def _versions() -> dict[str, str]:
    """Versions that shape the prompts: a checkpoint from other code is not reused."""
    import dspy

    from judgealign import __version__

    return {"judgealign": __version__, "dspy": str(getattr(dspy, "__version__", "?"))}


def labels_fingerprint(labels: LabelSet) -> str:
    """A hash of the labels' content (items, dimensions, scores, rationales, raters)."""
    rows = sorted((lab.item_id, lab.dimension, -1 if lab.score is None else lab.score,
                   lab.rationale, lab.rater or "", _sha(dict(lab.inputs)))
                  for lab in labels)
    return _sha(rows)


def _sha(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _fingerprint(settings: Mapping[str, Any], folds: Mapping[str, int], variant: str,
                 fold: int) -> str:
    keys = ("rubric_sha256", "labels_sha256", "dimensions", "seed", "k", "demo_input_tokens",
            "lm", "reflection_lm", "embedder", "memalign_options", "versions")
    return _sha({"format": CHECKPOINT_FORMAT, "variant": variant, "fold": fold,
                 "folds": dict(sorted(folds.items())), **{key: settings[key] for key in keys}})


class _Checkpoints:
    """Per-(fold, variant) result files under ``<dir>/folds/``; reads only when resuming."""

    def __init__(self, directory: str | Path | None, resume: bool) -> None:
        self.dir = Path(directory) / "folds" if directory is not None else None
        self.resume = resume

    def path(self, fold: int, variant: str) -> Path:
        assert self.dir is not None
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", variant)
        return self.dir / f"fold{fold}-{safe}.json"

    def load(self, fold: int, variant: str, fingerprint: str
             ) -> tuple[list[ItemRecord], RunCost, dict[str, Any] | None] | None:
        if self.dir is None or not self.resume:
            return None
        path = self.path(fold, variant)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or half-written: recompute
        if data.get("fingerprint") != fingerprint:
            return None
        records = [ItemRecord(**r) for r in data["records"]]
        cost = RunCost(**{**data["cost"], "reused": True})
        return records, cost, data.get("report")

    def save(self, fold: int, variant: str, fingerprint: str, records: list[ItemRecord],
             cost: RunCost, report: dict[str, Any] | None) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(fold, variant)
        tmp = path.with_name(path.name + ".tmp")
        data = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "fold": fold,
                "variant": variant, "cost": cost.to_dict(),
                "report": _jsonable(report) if report is not None else None,
                "records": [r.to_dict() for r in records]}
        tmp.write_text(json.dumps(_jsonable(data), ensure_ascii=False, indent=1),
                       encoding="utf-8")
        os.replace(tmp, path)


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cross-validation", unit="run", disable=not enabled)


__all__ = ["BASELINE", "KNOWN_VARIANTS", "CVResult", "ItemRecord", "LeakageError", "RunCost",
           "assign_folds", "check_no_leakage", "cross_validate", "default_optimizer_factory",
           "labels_fingerprint"]
