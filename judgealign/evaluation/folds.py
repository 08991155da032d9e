"""K folds over items: whole items, identical inputs together, stratified, seeded.

Folds partition ITEMS, never labels: all dimensions and all raters of an item stay in one
fold. Items with identical inputs under different ids (the same snippet graded for two
systems, say) are one *unit*: they always share a fold, so a copy of a held-out item never
sits in training. With ``group_by`` (an input field, e.g. ``"question"``), items whose value
of that field is equal after stripping whitespace join the same unit too (the union of both
relations), so several answers to one question never straddle folds; an empty value groups
nothing. ``group_by="id:REGEX"`` groups by a part of the item id instead (:func:`group_value`),
for a relation no input carries (the story several questions are about).

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
import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from judgealign.evaluation.options import ID_PREFIX, CVOptionsError
from judgealign.labels import LabelSet


def assign_folds(item_ids: Iterable[str], k: int, seed: int = 0,
                 labels: LabelSet | None = None, *,
                 group_by: str | None = None) -> dict[str, int]:
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
    group_by
        An input field: items of ``labels`` with the same non-empty value of it (whitespace
        stripped) are merged into one unit as well. Ignored without ``labels``.

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
    groups = content_groups(ids, labels, group_by=group_by)
    keys = sorted(groups)
    if len(keys) < k:
        grouped = (f" (items sharing {group_by!r} count once)"
                   if group_by and labels is not None else "")
        raise CVOptionsError(f"{k} folds need at least {k} distinct items, got "
                             f"{len(keys)}{grouped}")
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


def group_value(group_by: str) -> Callable[[str, Mapping[str, str]], str]:
    """``(item id, inputs) -> the item's group value`` ("" = not grouped) for a ``group_by``:
    an input field's stripped value, or with ``id:REGEX`` the first match of REGEX in the item
    id (its first capture group when it has one): ``id:^sq-(\\d+)-`` groups SQuALITY's answers
    by story (ids ``sq-<passage>-q<n>-<system>``) though the story is no input."""
    if group_by.startswith(ID_PREFIX):
        pattern = re.compile(group_by[len(ID_PREFIX):])

        def by_id(item_id: str, _: Mapping[str, str]) -> str:
            m = pattern.search(item_id)
            return "" if m is None else (m.group(1) if pattern.groups else m.group(0)) or ""

        return by_id
    return lambda _, inputs: str(inputs.get(group_by) or "").strip()


def content_groups(ids: Iterable[str], labels: LabelSet | None, *,
                   group_by: str | None = None) -> dict[str, list[str]]:
    """Units of items: ``content key -> item ids``; items whose inputs are identical (one
    text under several ids) share a key. Without labels every item is its own unit.

    With ``group_by`` (an input field name), items whose value of that field is equal after
    stripping whitespace are merged too (union-find over both relations, so chains join:
    a twin of an item in one question group pulls that group in); a merged unit's key is the
    smallest content key among its members. Items with an empty or missing value are not
    grouped by the field."""
    ids = sorted(set(ids))
    if labels is None:
        return {i: [i] for i in ids}
    from judgealign.items import item_id_for

    inputs = labels.items()
    groups: dict[str, list[str]] = {}
    for i in ids:
        key = item_id_for(inputs[i]) if i in inputs else i
        groups.setdefault(key, []).append(i)
    if group_by is None:
        return groups
    parent = {key: key for key in groups}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    value_of = group_value(group_by)
    first: dict[str, str] = {}  # field value -> the first content key that had it
    for key in sorted(groups):
        for i in groups[key]:
            value = value_of(i, inputs.get(i) or {})
            if not value:
                continue
            other = first.setdefault(value, key)
            a, b = root(key), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the smallest key names the unit
    merged: dict[str, list[str]] = {}
    for key in sorted(groups):
        merged.setdefault(root(key), []).extend(groups[key])
    return {key: sorted(members) for key, members in merged.items()}


def _mean_reference(labels: LabelSet) -> dict[str, float]:
    scores: dict[str, list[int]] = {}
    for e in labels.episodes():
        if e.score is not None:
            scores.setdefault(e.item_id, []).append(e.score)
    return {i: float(np.mean(s)) for i, s in scores.items()}


__all__ = ["assign_folds", "content_groups"]
