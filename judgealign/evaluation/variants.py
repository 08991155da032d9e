"""How each row of a cross-validation runs: LLM variants through :mod:`judgealign.build`,
and the reference predictors that need no LM.

LLM variants
------------
A variant is a settings override (:data:`judgealign.build.VARIANTS`): for one fold a fresh
judge is built and aligned on the training items with exactly the call ``align`` makes,
``build.compile(program, train_labels, settings, variant=...)``, so a fold evaluates what a
user would ship with those settings. The leakage guard runs on the aligned judge, then it
judges the held-out items.

Reference predictors
--------------------
Computed on the same folds from the fold's TRAINING labels only (the leakage guard checks
what they were fitted on), with no LM call, so a report shows whether the LLM adds anything:

* ``constant`` -- per dimension, the aggregate of the training items' reference scores:
  the lower median, N/A when most of them are N/A (:func:`judgealign.labels.aggregate`).
* ``neighbours`` -- per dimension, the same aggregate over the ``k`` training items nearest
  to the held-out item (cosine similarity of the embedder the judge's episodic memory uses,
  on the same item text; ``k = settings.memory.k``, at least 1; ties broken by item id).

A reference with no training label on a dimension has nothing to predict: its judgment is
recorded as failed (and charged as a failure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from judgealign import build
from judgealign.evaluation.leakage import check_no_leakage
from judgealign.evaluation.options import BASELINE, CONSTANT, NEIGHBOURS, CVOptionsError
from judgealign.evaluation.results import ItemRecord, RunCost
from judgealign.labels import LabelSet, aggregate

# --- LLM variants ---------------------------------------------------------------------------


def skip_reason(variant: str) -> str | None:
    """Why a known variant cannot run as a CV variant (``None``: it can)."""
    if variant in build.UNSUPPORTED_VARIANTS:
        from judgealign.optimizers.baselines import unsupported_reason

        return unsupported_reason(variant)
    return None


def uses_reflection(settings: Any, variant: str) -> bool:
    """True when ``variant`` distils guidelines (it needs the reflection LM)."""
    return (variant in build.VARIANTS and variant != BASELINE
            and build.variant_settings(settings, variant).memory.semantic)


def uses_embedder(variant: str) -> bool:
    """True when ``variant`` embeds items (episodic memory, knn few-shot)."""
    return variant != BASELINE


class ProgramSource:
    """Where each fold's fresh, unaligned judge comes from.

    Parameters
    ----------
    program
        A rubric (a :class:`Rubric`, a built-in name or a rubric file): the judge is
        ``build.program(rubric, variant settings, lm=lm)``; an unaligned
        :class:`RubricJudge`: copied per fold; or a function returning a fresh one.
    """

    def __init__(self, program: Any) -> None:
        from judgealign.program import RubricJudge
        from judgealign.signatures.rubric import Rubric, resolve_rubric

        self._judge: Any = None
        self._factory: Callable[[], Any] | None = None
        if isinstance(program, RubricJudge):
            aligned = (program.memory is not None or program.seen
                       or any(j.guidelines for j in program.judges.values()))
            if aligned:
                raise CVOptionsError("cross_validate needs an unaligned judge (it aligns one "
                                     "per fold); pass the rubric or a fresh RubricJudge")
            self._judge, self.rubric = program, program.rubric
        elif isinstance(program, Rubric | str | Path):
            self.rubric = resolve_rubric(program)
        elif callable(program):
            sample = program()
            if not isinstance(sample, RubricJudge):
                raise TypeError(f"the program factory must return a RubricJudge, got "
                                f"{type(sample).__name__}")
            self._factory, self.rubric = program, sample.rubric
            self._judge = sample
        else:
            raise TypeError(f"program must be a rubric, a RubricJudge or a factory, got "
                            f"{type(program).__name__}")

    def own_lm(self) -> Any:
        """The LM the given judge carries (``None`` for a rubric or an LM-less judge)."""
        return self._judge.get_lm() if self._judge is not None else None

    def fresh(self, settings: Any, lm: Any) -> Any:
        """A fresh unaligned judge for a variant whose settings are ``settings``."""
        if self._factory is not None:
            return self._factory()
        if self._judge is not None:
            return self._judge.deepcopy()
        return build.program(self.rubric, settings, lm=lm)


def run_variant(source: ProgramSource, labels: LabelSet, settings: Any, variant: str, *,
                fold: int, train_ids: Sequence[str], test_ids: Sequence[str],
                references: Mapping[str, Mapping[str, int | None]], dims: Sequence[str],
                lm: Any, reflection_lm: Any, embedder: Any, progress: bool, seed: int
                ) -> tuple[list[ItemRecord], RunCost, dict[str, Any] | None]:
    """Align ``variant`` on the training items through ``build.compile``, check for leakage,
    judge the held-out items.

    Returns the held-out records (one per held-out item x dimension with a reference), the
    cost, and the compile report (``None`` for ``baseline``).
    """
    from judgealign.usage import CostMeter

    cost = RunCost(fold, variant, train_items=len(train_ids), test_items=len(test_ids))
    student = source.fresh(build.variant_settings(settings, variant), lm)
    report = None
    if variant == BASELINE:
        judge = student
    else:
        # One meter counts every LM called while compiling (judge and reflection alike).
        with CostMeter() as meter:
            judge = build.compile(student, labels.subset(train_ids), settings, variant=variant,
                                  judge_lm=lm, reflection=reflection_lm, embedder_=embedder,
                                  progress=progress, seed=seed)
        cost.align_seconds = meter.seconds
        cost.align_calls = meter.calls
        cost.align_prompt_tokens = meter.prompt_tokens
        cost.align_completion_tokens = meter.completion_tokens
        cost.align_cached_prompt_tokens = meter.cached_prompt_tokens
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
    with CostMeter() as meter:
        for need, ids in groups.items():
            results = judge.batch([items[i] for i in ids], item_ids=ids, dimensions=list(need),
                                  progress=progress)
            for item_id, result in zip(ids, results, strict=True):
                for dim in need:
                    r = result[dim]
                    out.append(ItemRecord(item_id, fold, dim, variant, references[dim][item_id],
                                          None if r.failed else r.score, r.failed, r.rationale,
                                          list(r.retrieved_ids), r.error))
    cost.judge_calls, cost.judge_seconds = meter.calls, meter.seconds
    cost.judge_prompt_tokens, cost.judge_completion_tokens = (meter.prompt_tokens,
                                                              meter.completion_tokens)
    cost.judge_cached_prompt_tokens = meter.cached_prompt_tokens
    _close(judge)
    return out, cost, report


def _close(judge: Any) -> None:
    """Release a fold's judge's memory (Chroma collections) once it has judged."""
    for owner in (judge, getattr(judge, "memory", None)):
        close = getattr(owner, "close", None)
        if callable(close):
            close()
            return


# --- reference predictors -------------------------------------------------------------------


class ConstantPredictor:
    """Predicts, per dimension, the aggregate of the training items' reference scores."""

    name = CONSTANT

    def __init__(self, train: LabelSet, dims: Sequence[str]) -> None:
        self.trained_on = frozenset(train.item_ids)
        self._values: dict[str, tuple[int | None, int]] = {}
        for dim in dims:
            scores = list(train.reference(dim).values())
            if scores:
                self._values[dim] = (aggregate(scores), len(scores))

    def predict(self, item_id: str, dim: str) -> tuple[int | None, str, list[str]] | None:
        """``(score, rationale, used ids)`` or ``None`` when there was nothing to fit."""
        if dim not in self._values:
            return None
        value, n = self._values[dim]
        return value, f"aggregate (lower median, N/A by majority) of {n} training labels", []


class NeighboursPredictor:
    """Predicts the aggregate of the ``k`` nearest training items' reference scores.

    Parameters
    ----------
    train
        The fold's training labels.
    dims
        Dimensions to predict.
    vectors
        ``item_id -> unit-norm embedding`` of (at least) the training and held-out items;
        embeddings are of item inputs only, never of labels.
    k
        Neighbours per prediction (>= 1).
    """

    name = NEIGHBOURS

    def __init__(self, train: LabelSet, dims: Sequence[str], vectors: Mapping[str, np.ndarray],
                 k: int) -> None:
        self.trained_on = frozenset(train.item_ids)
        self.k = max(1, int(k))
        self._vectors = vectors
        self._index: dict[str, tuple[list[str], np.ndarray, list[int | None]]] = {}
        for dim in dims:
            ref = train.reference(dim)
            ids = sorted(ref)
            if ids:
                matrix = np.stack([vectors[i] for i in ids])  # (n_train, dim)
                self._index[dim] = (ids, matrix, [ref[i] for i in ids])

    def predict(self, item_id: str, dim: str) -> tuple[int | None, str, list[str]] | None:
        if dim not in self._index:
            return None
        ids, matrix, scores = self._index[dim]
        sims = matrix @ self._vectors[item_id]  # (n_train,)
        # Highest similarity first; equal similarities in item-id order (ids are sorted).
        order = np.lexsort((np.arange(len(ids)), -sims))[: self.k]
        near = [ids[n] for n in order]
        value = aggregate([scores[n] for n in order])
        return value, f"aggregate of the {len(near)} nearest training items", near


def embed_items(labels: LabelSet, embedder: Any) -> dict[str, np.ndarray]:
    """``item_id -> unit-norm vector`` of every item's inputs, in one ``embed`` call, on the
    text episodic memory embeds (:func:`judgealign.memory.records.item_text`)."""
    from judgealign.memory.records import item_text

    items = labels.items()
    ids = sorted(items)
    if not ids:
        return {}
    matrix = np.asarray(embedder.embed([item_text(items[i]) for i in ids]), dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.where(norms == 0, 1.0, norms)
    return dict(zip(ids, matrix, strict=True))


def run_reference(name: str, labels: LabelSet, *, fold: int, train_ids: Sequence[str],
                  test_ids: Sequence[str], references: Mapping[str, Mapping[str, int | None]],
                  dims: Sequence[str], vectors: Mapping[str, np.ndarray] | None, k: int
                  ) -> list[ItemRecord]:
    """Fit reference predictor ``name`` on the training labels and predict the held-out
    items; the leakage guard checks that no held-out item was among its training items."""
    train = labels.subset(train_ids)
    predictor: ConstantPredictor | NeighboursPredictor
    if name == CONSTANT:
        predictor = ConstantPredictor(train, dims)
    elif name == NEIGHBOURS:
        if vectors is None:
            raise ValueError("the neighbours reference needs item vectors")
        predictor = NeighboursPredictor(train, dims, vectors, k)
    else:
        raise CVOptionsError(f"unknown reference predictor {name!r}")
    check_no_leakage(predictor, test_ids, where=f" (fold {fold}, reference {name!r})")
    out: list[ItemRecord] = []
    for item_id in test_ids:
        for dim in dims:
            if item_id not in references[dim]:
                continue
            guess = predictor.predict(item_id, dim)
            if guess is None:
                out.append(ItemRecord(item_id, fold, dim, name, references[dim][item_id], None,
                                      True, "", [], "no training label on this dimension"))
                continue
            value, why, used = guess
            out.append(ItemRecord(item_id, fold, dim, name, references[dim][item_id], value,
                                  False, why, used))
    return out


__all__ = ["ConstantPredictor", "NeighboursPredictor", "ProgramSource", "embed_items",
           "run_reference", "run_variant", "skip_reason", "uses_embedder", "uses_reflection"]
