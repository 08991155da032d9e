"""K-fold cross-validation of judge alignment: the proof behind every claim of judgealign.

For each fold ``f`` and each variant a fresh judge is aligned on the items of the OTHER folds
only -- through ``judgealign.build.compile``, the call ``align`` makes, with the variant's
settings -- then judges the items of fold ``f``; every item is therefore judged exactly once
per variant, by a judge that never saw its labels. The reference predictors (``constant``,
``neighbours``) are fitted on the same training items, and the human-vs-human row is added
when items have several raters. The pieces:

* :mod:`~judgealign.evaluation.options` -- :class:`CVOptions`, validated before any work;
* :mod:`~judgealign.evaluation.folds` -- the folds (whole items, duplicates together,
  optionally items sharing an input field such as the question (``group_by``), stratified,
  seeded);
* :mod:`~judgealign.evaluation.variants` -- how each variant and reference runs;
* :mod:`~judgealign.evaluation.leakage` -- the guard run after every fit;
* :mod:`~judgealign.evaluation.checkpoints` -- per-(fold, variant) files and fingerprints;
* :mod:`~judgealign.evaluation.analysis` -- charged errors, CIs, comparisons, human ceiling;
* :mod:`~judgealign.evaluation.results` -- :class:`CVResult` and its JSON form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from judgealign import build
from judgealign.errors import JudgeAlignError
from judgealign.evaluation.analysis import analyse, data_summary, human_records
from judgealign.evaluation.checkpoints import (
    Checkpoints,
    embedder_fingerprint,
    fingerprint,
    labels_fingerprint,
    lm_fingerprint,
    sha,
    variant_settings_fingerprint,
    versions,
)
from judgealign.evaluation.folds import assign_folds, content_groups
from judgealign.evaluation.leakage import LeakageError, check_no_leakage
from judgealign.evaluation.options import (
    BASELINE,
    REFERENCES,
    CVOptions,
    CVOptionsError,
    llm_variants,
)
from judgealign.evaluation.results import CVResult, ItemRecord, RunCost, jsonable
from judgealign.evaluation.variants import (
    ProgramSource,
    embed_items,
    run_reference,
    run_variant,
    skip_reason,
    uses_embedder,
    uses_reflection,
)
from judgealign.labels import LabelSet

# Keyword arguments of the old 18-parameter signature that still work (they become options
# or memory settings); anything else must go through ``options``/``settings``.
_LEGACY_MEMORY = ("k", "demo_input_tokens")


def cross_validate(program_or_rubric: Any, labels: LabelSet, settings: Any = None,
                   options: CVOptions | None = None, *, lm: Any = None,
                   reflection_lm: Any = None, embedder: Any = None, **legacy: Any) -> CVResult:
    """Cross-validate alignment variants of a rubric judge against expert labels.

    Parameters
    ----------
    program_or_rubric
        A rubric (a :class:`Rubric`, a built-in name or a rubric file), an unaligned
        :class:`RubricJudge` (copied per fold), or a function returning a fresh one.
    labels
        Expert labels; validated against the rubric.
    settings
        :class:`judgealign.config.Settings`, a TOML path or ``None`` (default:
        ``build.settings_from(None)``: ``./judgealign.toml`` and the environment). A
        variant runs with ``build.variant_settings(settings, variant)``.
    options
        :class:`CVOptions` (folds, seed, group_by, variants, references, dimensions, limit,
        n_bootstrap, progress, checkpoint_dir, resume ...); default ``CVOptions()``.
        The options' own fields are also accepted as keyword arguments (as are ``k`` and
        ``demo_input_tokens``, which set ``[memory]``), for callers of the old signature.
    lm
        The judge LM; default the given judge's LM, else DSPy's configured LM, else
        ``build.judge_lm(settings)``. Not needed when only reference predictors run.
    reflection_lm
        MemAlign's reflection LM; default ``build.reflection_lm(settings)`` (``[reflection_lm]``,
        else the judge LM). Built only when a variant distils guidelines.
    embedder
        Default ``build.embedder(settings)``; built only when a variant or the neighbours
        reference embeds items.

    Returns
    -------
    CVResult

    Raises
    ------
    CVOptionsError
        On invalid options (``group_by`` not an input of the rubric included), checked
        before anything is built or any LM is called.
    LeakageError
        When a held-out item reached a fold's judge or reference predictor.
    """
    import dspy

    options = _options(options, legacy)
    settings = build.settings_from(settings)
    memory = {k: legacy[k] for k in _LEGACY_MEMORY if k in legacy}
    if memory:
        settings = build.settings_from(settings, overrides={"memory": memory})
    source = ProgramSource(program_or_rubric)
    rubric = source.rubric
    labels, dims = _select(labels, rubric, options.dimensions, options.limit)
    # check_data refuses a group_by that is not an input of the rubric before the count.
    units = content_groups(labels.item_ids, labels, group_by=options.group_by)
    options.check_data(len(units), len(labels.item_ids), input_names=rubric.input_names)
    fold_of = assign_folds(labels.item_ids, options.folds, options.seed, labels=labels,
                           group_by=options.group_by)
    variants = list(options.variants)

    # Only now is anything built: every option and the data have been checked.
    if variants:
        lm = lm or source.own_lm() or dspy.settings.lm or build.judge_lm(settings)
    if reflection_lm is None and any(uses_reflection(settings, v) for v in variants):
        reflection_lm = build.reflection_lm(settings, program=build.program(rubric, settings,
                                                                            lm=lm))
    if embedder is None and (any(uses_embedder(v) for v in variants)
                             or "neighbours" in options.references):
        embedder = build.embedder(settings)

    run = {
        "rubric_sha256": sha(rubric.model_dump(mode="json")),
        "labels_sha256": labels_fingerprint(labels),
        "dimensions": dims, "seed": options.seed, "folds": dict(sorted(fold_of.items())),
        "lm": lm_fingerprint(lm), "reflection_lm": lm_fingerprint(reflection_lm),
        "embedder": embedder_fingerprint(embedder) if embedder is not None else None,
        "versions": versions(),
    }
    references = {d: labels.reference(d) for d in dims}
    store = Checkpoints(options.checkpoint_dir, options.resume, levels=rubric.scale)
    vectors = embed_items(labels, embedder) if "neighbours" in options.references else None

    records: list[ItemRecord] = []
    costs: list[RunCost] = []
    reports: dict[tuple[str, int], dict[str, Any]] = {}
    skipped = {v: why for v in variants if (why := skip_reason(v)) is not None}
    bar = _bar(options.folds * len(variants), options.progress)
    for fold in range(options.folds):
        train_ids = [i for i in labels.item_ids if fold_of[i] != fold]
        test_ids = [i for i in labels.item_ids if fold_of[i] == fold]
        expected = {(i, d): references[d][i] for i in test_ids for d in dims
                    if i in references[d]}
        for variant in variants:
            bar.set_postfix_str(f"fold {fold + 1}/{options.folds}, {variant}")
            if variant in skipped:
                bar.update(1)
                continue
            # A variant that distils nothing is not changed by the reflection LM.
            key = fingerprint({**run, "reflection_lm": run["reflection_lm"]
                               if uses_reflection(settings, variant) else None},
                              variant=variant, fold=fold,
                              variant_settings=variant_settings_fingerprint(settings, variant))
            saved = store.load(fold, variant, key, expected)
            if saved is not None:
                run_records, cost, report = saved
            else:
                with dspy.context(lm=lm):
                    run_records, cost, report = run_variant(
                        source, labels, settings, variant, fold=fold, train_ids=train_ids,
                        test_ids=test_ids, references=references, dims=dims, lm=lm,
                        reflection_lm=reflection_lm if uses_reflection(settings, variant)
                        else None, embedder=embedder, progress=options.progress,
                        seed=options.seed)
                store.save(fold, variant, key, run_records, cost, report)
            records += run_records
            costs.append(cost)
            if report is not None:
                reports[(variant, fold)] = report
            bar.update(1)
        for name in options.references:
            records += run_reference(name, labels, fold=fold, train_ids=train_ids,
                                     test_ids=test_ids, references=references, dims=dims,
                                     vectors=vectors, k=settings.memory.k)
    bar.close()

    ran = [v for v in variants if v not in skipped]
    rows = [*ran, *options.references]
    order = {v: i for i, v in enumerate(rows)}
    dim_order = {d: i for i, d in enumerate(dims)}
    records.sort(key=lambda r: (order[r.variant], dim_order[r.dimension], r.fold, r.item_id))
    if options.human:
        records += human_records(labels, dims, fold_of)
    agreement_by, mae, comparisons, best = analyse(
        records, variants=ran, references=list(options.references), dims=dims,
        item_ids=labels.item_ids, levels=rubric.scale, n_bootstrap=options.n_bootstrap,
        confidence=options.confidence, seed=options.seed)
    info = _settings_summary(rubric, labels, dims, options, settings, run, skipped)
    return CVResult(settings=info, folds=fold_of, dimensions=dims, variants=ran,
                    records=records, agreement=agreement_by, mae=mae, comparisons=comparisons,
                    costs=sorted(costs, key=lambda c: (order[c.variant], c.fold)),
                    skipped=skipped, align_reports=reports,
                    data=data_summary(labels, dims, fold_of, options.folds),
                    references=list(options.references), best_reference=best)


def _options(options: CVOptions | None, legacy: dict[str, Any]) -> CVOptions:
    """The options, from ``options`` or (old callers) from keyword arguments."""
    rest = {k: v for k, v in legacy.items() if k not in _LEGACY_MEMORY}
    if options is not None and not isinstance(options, CVOptions):
        raise TypeError(f"options must be a CVOptions, got {type(options).__name__}")
    if rest and options is not None:
        raise TypeError(f"give either options= or option keywords ({sorted(rest)}), not both")
    if "optimizer_factory" in rest or "memalign_options" in rest:
        raise TypeError("optimizer_factory/memalign_options are gone: a variant is a settings "
                        "override (judgealign.build.VARIANTS); pass settings= instead")
    if rest:
        return CVOptions.from_kwargs(**rest)
    return options if options is not None else CVOptions()


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
        labels = labels.subset(labels.item_ids[:limit])
        gone = [d for d in dims if d not in set(labels.dimensions)]
        if gone and dimensions:
            raise JudgeAlignError(f"the first {limit} items have no labels for dimension(s) "
                                  f"{gone}; raise the limit or drop them")
        dims = [d for d in dims if d not in gone]
    if not len(labels):
        raise CVOptionsError("no labels left to cross-validate")
    return labels, dims


def _settings_summary(rubric: Any, labels: LabelSet, dims: list[str], options: CVOptions,
                      settings: Any, run: dict[str, Any], skipped: dict[str, str]
                      ) -> dict[str, Any]:
    """How the run was made, for the report and ``results.json``."""
    public = settings.public_dict()
    return jsonable({
        "rubric": rubric.name,
        "rubric_sha256": run["rubric_sha256"],
        "labels_sha256": run["labels_sha256"],
        "dimensions": dims, "dimension_names": {d: rubric.dimension(d).name for d in dims},
        "scale": list(rubric.scale), "variants": list(options.variants),
        "references": list(options.references), "human": options.human,
        "folds": options.folds, "seed": options.seed, "group_by": options.group_by,
        "limit": options.limit,
        "n_bootstrap": options.n_bootstrap, "confidence": options.confidence,
        "k": settings.memory.k, "demo_input_tokens": settings.memory.demo_input_tokens,
        "lm": run["lm"], "reflection_lm": run["reflection_lm"], "embedder": run["embedder"],
        "config": {key: value for key, value in public.items() if key != "tracking"},
        "versions": run["versions"], "skipped": dict(skipped),
    })


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="cross-validation", unit="run", disable=not enabled)


# Names kept importable from here for callers of the one-module version.
KNOWN_VARIANTS = llm_variants()
__all__ = ["BASELINE", "KNOWN_VARIANTS", "REFERENCES", "CVOptions", "CVOptionsError", "CVResult",
           "ItemRecord", "LeakageError", "RunCost", "assign_folds", "check_no_leakage",
           "cross_validate", "labels_fingerprint"]
