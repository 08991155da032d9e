"""The one train/held-out split every benchmark uses, so "same folds" holds by construction.

Fold ``HELD_OUT_FOLD`` of ``assign_folds(k=FOLDS, seed=FOLD_SEED)`` (stratified on the labels,
identical inputs kept together) is held out; the other folds are the training items.
"""

from __future__ import annotations

from typing import Any

FOLDS, FOLD_SEED, HELD_OUT_FOLD = 4, 0, 0


def evenly(ids: list[str], n: int | None) -> list[str]:
    """An evenly spaced subset of ``n`` ids (all of them when ``n`` is None or 0)."""
    return ids[:: max(1, len(ids) // n)][:n] if n else ids


def fold_split(labels: Any, *, train: int | None = None, test: int | None = None
               ) -> tuple[list[str], list[str]]:
    """Sorted (training, held-out) item ids, each optionally thinned with :func:`evenly`."""
    from judgealign.evaluation.crossval import assign_folds

    folds = assign_folds(labels.item_ids, FOLDS, seed=FOLD_SEED, labels=labels)
    train_ids = sorted(i for i, f in folds.items() if f != HELD_OUT_FOLD)
    test_ids = sorted(i for i, f in folds.items() if f == HELD_OUT_FOLD)
    return evenly(train_ids, train), evenly(test_ids, test)
