"""K folds over items: whole items, identical inputs together, stratified, seeded.

Folds partition ITEMS, never labels: all dimensions and all raters of an item stay in one
fold. Items with identical inputs under different ids (the same snippet graded for two
systems, say) are one *unit*: they always share a fold, so a copy of a held-out item never
sits in training.

The scheme (:func:`assign_folds`): the units are sorted, shuffled with
``random.Random(seed)``, then stably sorted by the unit's mean aggregated reference score
(over its numeric labels; units with none come first), and dealt in consecutive blocks of
``k``: each block gives one unit to every fold, in an order drawn from the same generator.
Unit counts per fold differ by at most one, every fold gets a similar spread of scores, and
the seed decides which of two similar units goes where.

Why not ``sklearn.model_selection.StratifiedGroupKFold``: it stratifies on one class label per
sample (a unit's mean score would have to be binned into classes, and N/A-only units given a
class of their own) and assigns groups greedily by class-distribution spread, so on the small
sets judgealign is used with (16-50 items) fold sizes may differ by more than one group and
a score level can miss a fold entirely; dealing sorted blocks keeps both exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import numpy as np

from judgealign.evaluation.options import CVOptionsError
from judgealign.labels import LabelSet


def assign_folds(item_ids: Iterable[str], k: int, seed: int = 0,
                 labels: LabelSet | None = None) -> dict[str, int]:
    """Assign each item to one of ``k`` folds (see the module docstring for the scheme).

    Parameters
    ----------
    item_ids
        Item ids; duplicates are ignored and their order does not matter.
    k
        Number of folds, ``2 <= k <= number of units``.
    seed
        Seed of the shuffle; the same ids and seed always give the same folds.
    labels
        When given, items with identical inputs are one unit and folds are stratified by
        each unit's mean aggregated reference score.

    Returns
    -------
    dict
        ``item_id -> fold`` (0-based), sorted by item id.

    Raises
    ------
    CVOptionsError
        (a ``ValueError``) when ``k`` is not an int >= 2 or exceeds the number of units.
    """
    ids = sorted(set(item_ids))
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise CVOptionsError(f"folds must be an int >= 2, got {k!r}")
    groups = content_groups(ids, labels)
    keys = sorted(groups)
    if len(keys) < k:
        raise CVOptionsError(f"{k} folds need at least {k} distinct items, got {len(keys)}")
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


def content_groups(ids: Iterable[str], labels: LabelSet | None) -> dict[str, list[str]]:
    """Units of items: ``content key -> item ids``; items whose inputs are identical (one
    text under several ids) share a key. Without labels every item is its own unit."""
    ids = sorted(set(ids))
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


__all__ = ["assign_folds", "content_groups"]
