"""From held-out records to the numbers of a report: pooled agreement, MAE with bootstrap
CIs, paired comparisons, the better reference, and the human-vs-human ceiling.

Every error here is the *charged* error of :mod:`judgealign.evaluation.metrics` (failures and
N/A mismatches cost what the metrics module says), so every row is compared on ALL its items.
One resample of items (the same seed) serves every row, dimension and comparison.

Human vs human
--------------
When items have several raters on a dimension, each rater is scored against the aggregate
of the OTHER raters of the same item (leave-one-rater-out; lower median, N/A by majority)
and charged like a judge against the expert reference. An item's error is the mean over its
raters; the row's MAE is the mean over the items with >= 2 raters (``n``), with a bootstrap
CI over those items. It is the ceiling: a judge that matches it agrees with the experts as
well as they agree with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from judgealign.evaluation.bootstrap import paired_bootstrap
from judgealign.evaluation.metrics import Agreement, agreement, charged_errors
from judgealign.evaluation.options import BASELINE, HUMAN
from judgealign.evaluation.results import AGAINST_BASELINE, AGAINST_REFERENCE, ItemRecord
from judgealign.labels import LabelSet, aggregate

Analysis = tuple[dict[tuple[str, str], Agreement], list[dict[str, Any]], list[dict[str, Any]],
                 dict[str, str]]


def human_records(labels: LabelSet, dims: Sequence[str], folds: Mapping[str, int]
                  ) -> list[ItemRecord]:
    """One record per (dimension, item with >= 2 raters, rater): ``judge`` is the rater's
    score, ``human`` the aggregate of the other raters' scores. Unnamed raters are told
    apart by their position (``#1``, ``#2`` ...)."""
    by_key: dict[tuple[str, str], list[tuple[str, int | None]]] = {}
    for lab in labels:
        if lab.dimension in dims:
            group = by_key.setdefault((lab.dimension, lab.item_id), [])
            group.append((lab.rater if lab.rater is not None else f"#{len(group) + 1}",
                          lab.score))
    out: list[ItemRecord] = []
    dim_order = {d: n for n, d in enumerate(dims)}
    for (dim, item_id), rated in sorted(by_key.items(), key=lambda kv: (dim_order[kv[0][0]],
                                                                          kv[0][1])):
        if len(rated) < 2:
            continue
        for n, (rater, score) in enumerate(rated):
            others = [s for m, (_, s) in enumerate(rated) if m != n]
            out.append(ItemRecord(item_id, folds.get(item_id, -1), dim, HUMAN, aggregate(others),
                                  score, rationale="rater vs the aggregate of the other raters",
                                  rater=rater))
    return out


def analyse(records: Sequence[ItemRecord], *, variants: Sequence[str],
            references: Sequence[str], dims: Sequence[str], item_ids: Sequence[str],
            levels: Sequence[int], n_bootstrap: int, confidence: float, seed: int) -> Analysis:
    """Pooled agreement, MAE rows, comparisons and the better reference per dimension.

    Parameters
    ----------
    records
        Held-out records of the variants and references, and the human-vs-human records.
    variants, references
        LLM variants and reference predictors that ran, in report order.
    item_ids
        Every item (the columns of the error matrices).

    Returns
    -------
    agreement
        ``(row, dim) -> Agreement``.
    mae
        One dict per (row, dim), rows in order variants, references, human.
    comparisons
        Each variant but baseline vs baseline, then each variant vs the better reference.
    best_reference
        ``dim -> reference`` with the lowest pooled MAE (ties: the first in ``references``).
    """
    col = {i: n for n, i in enumerate(item_ids)}
    rows = [*variants, *references]
    by_row: dict[str, dict[str, list[ItemRecord]]] = {}
    for r in records:
        by_row.setdefault(r.variant, {}).setdefault(r.dimension, []).append(r)
    has_human = HUMAN in by_row
    agreement_by: dict[tuple[str, str], Agreement] = {}
    errors: dict[str, np.ndarray] = {}  # row -> (n_dims, n_items), NaN: no record
    for row in [*rows, *([HUMAN] if has_human else [])]:
        err = np.full((len(dims), len(item_ids)), np.nan)
        for d, dim in enumerate(dims):
            got = sorted(by_row.get(row, {}).get(dim, []), key=lambda r: (r.item_id,
                                                                           r.rater or ""))
            if row == HUMAN and not got:
                continue
            human = [r.human for r in got]
            judged = [r.judge for r in got]
            failed = [bool(r.failed) for r in got]
            agreement_by[(row, dim)] = agreement(human, judged, levels=levels, failed=failed)
            charged = charged_errors(human, judged, failed, levels=levels)
            sums: dict[str, list[float]] = {}
            for r, e in zip(got, charged, strict=True):
                sums.setdefault(r.item_id, []).append(float(e))
            for item_id, values in sums.items():  # human: the mean over the item's raters
                err[d, col[item_id]] = float(np.mean(values))
        errors[row] = err

    mae: list[dict[str, Any]] = []
    for row in [*rows, *([HUMAN] if has_human else [])]:
        kind = "variant" if row in variants else "reference" if row in references else "human"
        # A row against itself: the "a" side is the plain bootstrap of its own MAE, from the
        # same resampled item indices as every comparison.
        own = paired_bootstrap(errors[row], errors[row], n_resamples=n_bootstrap,
                               confidence=confidence, seed=seed)
        for dim, rec in zip(dims, own.to_records(), strict=True):
            a = agreement_by.get((row, dim))
            if a is None:
                continue
            entry = {"variant": row, "kind": kind, "dimension": dim, "mae": rec["mae_a"],
                     "ci_low": rec["mae_a_ci_low"], "ci_high": rec["mae_a_ci_high"],
                     "n": rec["n_items_paired"], "n_failed": a.n_failed,
                     "mae_scored": a.to_dict()["mae_scored"], "n_scored": a.n_scored,
                     "confidence": rec["confidence"]}
            if row == HUMAN:
                entry["n_pairs"] = a.n_items
            mae.append(entry)

    comparisons: list[dict[str, Any]] = []

    def compare(variant: str, reference: np.ndarray, names: Sequence[str], against: str) -> None:
        result = paired_bootstrap(reference, errors[variant], n_resamples=n_bootstrap,
                                  confidence=confidence, seed=seed)
        for d, rec in enumerate(result.to_records()):
            rec.pop("dim")
            comparisons.append({"variant": variant, "reference": names[d], "against": against,
                                "dimension": dims[d], **rec})

    if BASELINE in variants:
        for v in variants:
            if v != BASELINE:
                compare(v, errors[BASELINE], [BASELINE] * len(dims), AGAINST_BASELINE)
    best = best_reference(agreement_by, references, dims)
    if best:
        # Row d of the reference matrix is the better reference of dimension d.
        ref_err = np.full((len(dims), len(item_ids)), np.nan)
        names = []
        for d, dim in enumerate(dims):
            name = best.get(dim)
            names.append(name or "")
            if name is not None:
                ref_err[d] = errors[name][d]
        for v in variants:
            compare(v, ref_err, names, AGAINST_REFERENCE)
        comparisons = [c for c in comparisons if c["reference"]]
    return agreement_by, mae, comparisons, best


def best_reference(agreement_by: Mapping[tuple[str, str], Agreement],
                   references: Sequence[str], dims: Sequence[str]) -> dict[str, str]:
    """``dim -> reference`` with the lowest pooled (charged) MAE; ties: the first listed."""
    out: dict[str, str] = {}
    for dim in dims:
        scored = [(agreement_by[(r, dim)].mae, n, r) for n, r in enumerate(references)
                  if (r, dim) in agreement_by and not np.isnan(agreement_by[(r, dim)].mae)]
        if scored:
            out[dim] = min(scored)[2]
    return out


def data_summary(labels: LabelSet, dims: Sequence[str], fold_of: Mapping[str, int],
                 k: int) -> dict[str, Any]:
    """Items, labels, raters, fold sizes and per-dimension counts of reference scores."""
    from judgealign.signatures.rubric import format_score

    raters = {lab.rater for lab in labels if lab.rater is not None}
    per_dim: dict[str, dict[str, int]] = {}
    multi: dict[str, int] = {}
    for dim in dims:
        counts: dict[str, int] = {}
        for score in labels.reference(dim).values():
            counts[format_score(score)] = counts.get(format_score(score), 0) + 1
        per_dim[dim] = dict(sorted(counts.items()))
        per_item: dict[str, int] = {}
        for lab in labels:
            if lab.dimension == dim:
                per_item[lab.item_id] = per_item.get(lab.item_id, 0) + 1
        multi[dim] = sum(1 for n in per_item.values() if n >= 2)
    sizes = [sum(1 for f in fold_of.values() if f == i) for i in range(k)]
    return {"items": len(labels.item_ids), "labels": len(labels), "raters": len(raters),
            "fold_sizes": sizes, "reference_scores": per_dim, "multi_rater_items": multi}


__all__ = ["analyse", "best_reference", "data_summary", "human_records"]
