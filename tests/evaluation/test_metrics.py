"""Tests of judgealign.evaluation.metrics: charged MAE, N/A conventions, QWK, Spearman,
validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from judgealign.evaluation.metrics import (
    Agreement,
    abs_errors,
    agreement,
    average_ranks,
    charged_errors,
    item_charge,
    quadratic_weighted_kappa,
    spearman,
)

# --- QWK -------------------------------------------------------------------------------


def test_qwk_hand_computed() -> None:
    # levels 1..3 -> indices 0..2; pairs (0,0) (1,2) (2,2) (2,1).
    # sum(W*O) = 1/4 + 1/4 = 1/2. Marginals rows [1,1,2], cols [1,1,2], n = 4, so
    # sum(W*E) = (1/4) * (1/4 + 2*1 + 1/4 + 2/4 + 2*1 + 2/4) = 11/8 and kappa = 1 - 4/11.
    kappa = quadratic_weighted_kappa(np.array([1, 2, 3, 3]), np.array([1, 3, 3, 2]), [1, 2, 3])
    assert kappa == pytest.approx(7 / 11, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_qwk_equals_pairwise_formula(seed: int) -> None:
    # On a contiguous scale sum(W*E)/n is the mean squared difference over ALL (i, k) pairs,
    # an independent route to the same number.
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 5, size=40)
    j = np.clip(h + rng.integers(-2, 3, size=40), 0, 4)
    expected = 1 - np.mean((h - j) ** 2) / np.mean((h[:, None] - j[None, :]) ** 2)
    assert quadratic_weighted_kappa(h, j, range(5)) == pytest.approx(expected, abs=1e-12)


def test_qwk_edge_cases() -> None:
    assert quadratic_weighted_kappa(np.array([1, 2, 3]), np.array([1, 2, 3]), [1, 2, 3]) == 1.0
    # One side constant: O == E, so kappa is exactly 0.
    assert quadratic_weighted_kappa(np.array([1, 2, 3]), np.array([2, 2, 2]), [1, 2, 3]) == 0.0
    # Both constant but different: still defined, 0.
    assert quadratic_weighted_kappa(np.array([1, 1]), np.array([3, 3]), [1, 2, 3]) == 0.0
    # Both constant on the same level: 0/0.
    assert math.isnan(quadratic_weighted_kappa(np.array([2, 2]), np.array([2, 2]), [1, 2, 3]))
    assert math.isnan(quadratic_weighted_kappa(np.array([], int), np.array([], int), [1, 2]))
    # Level order does not matter.
    h, j = np.array([1, 2, 3, 3]), np.array([1, 3, 3, 2])
    assert quadratic_weighted_kappa(h, j, [3, 1, 2]) == quadratic_weighted_kappa(h, j, [1, 2, 3])


def test_qwk_unused_levels_change_nothing_only_through_weights() -> None:
    # An unused extreme level widens K, which rescales W uniformly: kappa is unchanged.
    h, j = np.array([1, 2, 3, 3]), np.array([1, 3, 3, 2])
    assert quadratic_weighted_kappa(h, j, [1, 2, 3, 4]) == pytest.approx(
        quadratic_weighted_kappa(h, j, [1, 2, 3]), abs=1e-12
    )


def test_qwk_rejects_value_outside_levels() -> None:
    with pytest.raises(ValueError, match=r"judge\[1\] = 5"):
        quadratic_weighted_kappa(np.array([1, 2]), np.array([1, 5]), [1, 2, 3])


@pytest.mark.parametrize("levels", [[1, 2, 3], [0, 1, 2, 3, 4], [1, 3, 5]])
def test_qwk_matches_sklearn(levels: list[int]) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    for _ in range(10):
        h = rng.choice(levels, size=30)
        j = rng.choice(levels, size=30)
        ours = quadratic_weighted_kappa(h, j, levels)
        theirs = metrics.cohen_kappa_score(h, j, weights="quadratic", labels=levels)
        assert ours == pytest.approx(theirs, abs=1e-12)


# --- Spearman --------------------------------------------------------------------------


def test_average_ranks_ties() -> None:
    np.testing.assert_array_equal(average_ranks([3, 1, 2, 2, 3]), [4.5, 1, 2.5, 2.5, 4.5])
    np.testing.assert_array_equal(average_ranks([5]), [1.0])
    assert average_ranks([]).shape == (0,)


def test_spearman_hand_computed() -> None:
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3.5, 2, 3.5]; centred dot 3.75, both norms^2 4.5.
    assert spearman([1, 2, 2, 3], [1, 3, 2, 3]) == pytest.approx(5 / 6, abs=1e-12)


def test_spearman_monotone_and_undefined() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isnan(spearman([1, 2, 3], [2, 2, 2]))
    assert math.isnan(spearman([2, 2, 2], [1, 2, 3]))
    assert math.isnan(spearman([1], [1]))
    assert math.isnan(spearman([], []))


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(10):
        x = rng.integers(0, 4, size=25)
        y = rng.integers(0, 4, size=25)
        expected = stats.spearmanr(x, y).statistic
        assert spearman(x, y) == pytest.approx(expected, abs=1e-12)


# --- agreement: N/A conventions --------------------------------------------------------

HUMAN = [1, 2, 3, None, None, 2, 3, 1]
JUDGE = [1, 3, 1, None, 2, None, 3, 2]
# item: 0 exact, 1 off by 1, 2 off by 2, 3 both N/A, 4 human-only N/A,
#       5 judge-only N/A, 6 exact, 7 off by 1.


def test_agreement_na_conventions() -> None:
    res = agreement(HUMAN, JUDGE, levels=[1, 2, 3])
    assert (res.n_items, res.n_failed, res.n_scored, res.n_both_na) == (8, 0, 5, 1)
    assert (res.n_na_confusion, res.n_na_human_only, res.n_na_judge_only) == (2, 1, 1)
    assert res.mae_scored == pytest.approx((0 + 1 + 2 + 0 + 1) / 5)
    # Charged over all 8: item 4 (human N/A, judge 2) costs 3 - 1 = 2, item 5 (human 2,
    # judge N/A) max(2 - 1, 3 - 2) = 1, both-N/A item 3 costs 0.
    assert res.mae == pytest.approx((0 + 1 + 2 + 0 + 2 + 1 + 0 + 1) / 8)
    # exact: items 0, 6 plus both-N/A item 3, over all 8 evaluated items.
    assert res.exact == pytest.approx(3 / 8)
    # within one: items 0, 1, 6, 7 plus item 3.
    assert res.within_one == pytest.approx(5 / 8)
    scored_h, scored_j = [1, 2, 3, 3, 1], [1, 3, 1, 3, 2]
    assert res.qwk == quadratic_weighted_kappa(np.array(scored_h), np.array(scored_j), [1, 2, 3])
    assert res.spearman == spearman(scored_h, scored_j)


def test_agreement_failed_items_are_excluded_and_counted() -> None:
    failed = [False, True, False, True, False, False, False, False]
    # A failed judge entry is not range-checked: 99 must not raise.
    judge = list(JUDGE)
    judge[1] = 99
    res = agreement(HUMAN, judge, levels=[1, 2, 3], failed=failed)
    assert (res.n_items, res.n_failed, res.n_scored, res.n_both_na) == (8, 2, 4, 0)
    assert res.n_na_confusion == 2
    assert res.mae_scored == pytest.approx((0 + 2 + 0 + 1) / 4)
    # Failed item 1 (human 2) costs max(1, 1) = 1; failed item 3 (human N/A) costs 2.
    assert res.mae == pytest.approx((0 + 1 + 2 + 2 + 2 + 1 + 0 + 1) / 8)
    assert res.exact == pytest.approx(2 / 6)
    assert res.within_one == pytest.approx(3 / 6)


def test_agreement_count_invariants() -> None:
    rng = np.random.default_rng(11)
    choices = [None, 0, 1, 2, 3, 4]
    human = [choices[k] for k in rng.integers(0, 6, size=60)]
    judge = [choices[k] for k in rng.integers(0, 6, size=60)]
    failed = [bool(f) for f in rng.random(60) < 0.2]
    res = agreement(human, judge, levels=range(5), failed=failed)
    assert res.n_items == res.n_failed + res.n_scored + res.n_both_na + res.n_na_confusion
    assert res.n_na_confusion == res.n_na_human_only + res.n_na_judge_only
    errors, valid = abs_errors(human, judge, failed)
    assert int(valid.sum()) == res.n_scored
    assert float(np.nanmean(errors)) == pytest.approx(res.mae_scored)
    charged = charged_errors(human, judge, failed, levels=range(5))
    assert not np.any(np.isnan(charged)) and float(charged.mean()) == pytest.approx(res.mae)
    np.testing.assert_array_equal(charged[valid], errors[valid])  # scored items: |h - j|


def test_agreement_degenerate_cases() -> None:
    all_failed = agreement([1, 2], [1, 2], levels=[1, 2], failed=[True, True])
    assert all_failed.n_failed == 2 and all_failed.n_scored == 0
    assert all_failed.mae == 1.0  # human 1 and 2 on a 1..2 scale: each failure costs 1
    for value in (
        all_failed.mae_scored,
        all_failed.exact,
        all_failed.within_one,
        all_failed.qwk,
        all_failed.spearman,
    ):
        assert math.isnan(value)
    only_na = agreement([None, None], [None, 1], levels=[1, 2])
    assert only_na.exact == 0.5 and only_na.within_one == 0.5
    assert math.isnan(only_na.mae_scored) and only_na.mae == 0.5  # the N/A mismatch costs 1
    empty = agreement([], [], levels=[1, 2])
    assert empty.n_items == 0 and math.isnan(empty.exact) and math.isnan(empty.mae)


def test_agreement_accepts_numpy_ints() -> None:
    res = agreement(
        [np.int64(1), np.int32(2)], [1, 2], levels=np.arange(1, 4), failed=[np.bool_(False), False]
    )
    assert res.exact == 1.0 and res.n_scored == 2


def test_to_dict_is_strict_json() -> None:
    res = agreement([2, 2], [2, 2], levels=[1, 2, 3])
    assert math.isnan(res.qwk)  # both constant on the same level
    d = res.to_dict()
    assert d["qwk"] is None and d["spearman"] is None and d["exact"] == 1.0
    assert set(d) == set(Agreement.__dataclass_fields__)
    json.dumps(d, allow_nan=False)


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("human", "judge", "kwargs", "pattern"),
    [
        ([1, 2], [1], {}, r"equal lengths, got 2 and 1"),
        ([1, 4], [1, 2], {}, r"human\[1\] = 4 is not one of levels \[1, 2, 3\]"),
        ([1, 2], [0, 2], {}, r"judge\[0\] = 0 is not one of levels"),
        ([1, 2.0], [1, 2], {}, r"human\[1\] = 2.0 \(float\)"),
        ([1, 2], [True, 2], {}, r"judge\[0\] = True \(bool\)"),
        ([1, 2], [1, float("nan")], {}, r"judge\[1\] = nan"),
        ([1, 2], [1, 2], {"failed": [False]}, r"one entry per item: got 1 for 2"),
        ([1, 2], [1, 2], {"failed": [0, 1]}, r"failed\[0\] = 0: expected a bool"),
        ([1, 2], [1, 2], {"levels": [1]}, r"at least two distinct levels"),
        ([1, 2], [1, 2], {"levels": [1, 2, 2]}, r"levels must be distinct"),
        ([1, 2], [1, 2], {"levels": [1, 2.5]}, r"levels\[1\] = 2.5"),
    ],
)
def test_agreement_validation(human: list, judge: list, kwargs: dict, pattern: str) -> None:
    kwargs = {"levels": [1, 2, 3], **kwargs}
    with pytest.raises(ValueError, match=pattern):
        agreement(human, judge, **kwargs)


# --- abs_errors ------------------------------------------------------------------------


def test_abs_errors_values_and_mask() -> None:
    failed = [False] * 7 + [True]
    errors, valid = abs_errors(HUMAN, JUDGE, failed)
    assert errors.dtype == np.float64 and errors.shape == (8,) and valid.dtype == bool
    np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(errors[valid], [0, 1, 2, 0])
    assert np.all(np.isnan(errors[~valid]))


def test_abs_errors_validation() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        abs_errors([1], [1, 2])
    with pytest.raises(ValueError, match=r"human\[0\] = '3'"):
        abs_errors(["3"], [1])


# --- charged errors: failures and N/A count -----------------------------------------------


def test_item_charges_follow_the_documented_table() -> None:
    lo, hi = 1, 3
    assert item_charge(2, 3, False, lo, hi) == 1.0
    assert item_charge(None, None, False, lo, hi) == 0.0
    assert item_charge(1, None, True, lo, hi) == 2.0  # failed: worst a level could do
    assert item_charge(2, None, True, lo, hi) == 1.0
    assert item_charge(3, None, False, lo, hi) == 2.0  # judge N/A: like a failure
    assert item_charge(None, 2, False, lo, hi) == 2.0  # human N/A, judge a level
    assert item_charge(None, None, True, lo, hi) == 2.0  # human N/A, judge failed


def test_failing_on_the_hardest_items_gives_a_worse_headline_mae() -> None:
    # The example: 8 items, the LM fails on the 4 whose human score is 1.
    human = [1, 1, 1, 1, 3, 3, 3, 3]
    failing = [None, None, None, None, 3, 3, 3, 3]
    failed = [True] * 4 + [False] * 4
    answering = [2, 2, 2, 2, 3, 3, 3, 3]  # answers them, one level off
    fails = agreement(human, failing, levels=[1, 2, 3], failed=failed)
    answers = agreement(human, answering, levels=[1, 2, 3])
    assert fails.mae_scored == 0.0 and fails.n_failed == 4  # what the old table showed
    assert fails.mae == pytest.approx(4 * 2 / 8) and answers.mae == pytest.approx(4 * 1 / 8)
    assert fails.mae > answers.mae


@pytest.mark.parametrize("levels", [[1, 2, 3], [0, 1, 2, 3, 4]])
def test_abstaining_is_never_cheaper_than_any_level(levels: list[int]) -> None:
    for h in [*levels, None]:
        abstain = float(charged_errors([h], [None], levels=levels)[0])
        fail = float(charged_errors([h], [None], [True], levels=levels)[0])
        answers = [float(charged_errors([h], [j], levels=levels)[0]) for j in levels]
        if h is None:
            assert abstain == 0.0 and min(answers) == fail == max(levels) - min(levels)
        else:
            assert abstain == fail == max(answers) >= min(answers) == 0.0


def test_charged_errors_validation() -> None:
    with pytest.raises(ValueError, match=r"judge\[0\] = 7 is not one of levels"):
        charged_errors([1], [7], levels=[1, 2, 3])
    # A failed judgment's judge entry is not range-checked.
    assert charged_errors([1], [7], [True], levels=[1, 2, 3]).tolist() == [2.0]
