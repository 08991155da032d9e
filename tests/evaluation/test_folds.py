"""Tests of judgealign.evaluation.folds: whole items, duplicates together, stratified, seeded."""

from __future__ import annotations

import pytest
from cv_cases import banana_labels

from judgealign.errors import JudgeAlignError
from judgealign.evaluation.folds import assign_folds, content_groups
from judgealign.labels import LabelSet


def test_folds_are_reproducible_balanced_and_seeded(tiny_rubric):
    labels = banana_labels(tiny_rubric, 13)
    ids = labels.item_ids
    a = assign_folds(ids, 4, seed=0, labels=labels)
    assert a == assign_folds(list(reversed(ids)), 4, seed=0, labels=labels)  # order-free
    assert assign_folds(ids, 4, seed=1, labels=labels) != a
    assert set(a) == set(ids) and set(a.values()) == {0, 1, 2, 3}
    sizes = sorted(list(a.values()).count(f) for f in range(4))
    assert sizes[-1] - sizes[0] <= 1
    assert assign_folds(ids, 4, seed=0) == assign_folds(ids, 4, seed=0)


def test_folds_are_stratified_by_reference_score(tiny_rubric):
    rows = [{"item_id": f"x{i:02d}", "inputs": {"answer": f"a{i}"}, "dimension": "correctness",
             "score": 1 + i % 3} for i in range(12)]
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    ref = labels.reference("correctness")
    for seed in range(5):
        folds = assign_folds(labels.item_ids, 4, seed, labels=labels)
        for f in range(4):
            # 4 items of each score, 4 folds: every fold gets exactly one of each.
            assert sorted(ref[i] for i in folds if folds[i] == f) == [1, 2, 3]


def test_items_with_identical_inputs_share_a_fold(tiny_rubric):
    rows = [{"item_id": f"i{n}", "inputs": {"answer": f"text {n % 5}"},
             "dimension": "correctness", "score": 1 + n % 3, "rationale": ""} for n in range(20)]
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    assert len(content_groups(labels.item_ids, labels)) == 5
    for seed in range(5):
        folds = assign_folds(labels.item_ids, 4, seed=seed, labels=labels)
        for n in range(20):
            assert folds[f"i{n}"] == folds[f"i{n % 5}"]


def test_bad_fold_counts_are_rejected_as_our_errors(tiny_rubric):
    for bad in (1, 0, -3, True, 2.0):
        with pytest.raises(JudgeAlignError, match="folds must be an int >= 2"):
            assign_folds(["a", "b"], bad)
    with pytest.raises(ValueError, match="at least 3 distinct items"):  # still a ValueError
        assign_folds(["a", "b"], 3)
    rows = [{"item_id": f"i{n}", "inputs": {"answer": "same"}, "dimension": "correctness",
             "score": 2} for n in range(4)]
    with pytest.raises(JudgeAlignError, match="2 folds need at least 2 distinct items, got 1"):
        assign_folds([f"i{n}" for n in range(4)], 2,
                     labels=LabelSet.from_records(rows, rubric=tiny_rubric))
