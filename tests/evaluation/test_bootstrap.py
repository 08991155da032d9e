"""Tests of judgealign.evaluation.bootstrap.paired_bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from judgealign.evaluation.bootstrap import BootstrapResult, paired_bootstrap


def _errors(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float64)


def _naive(a: np.ndarray, b: np.ndarray, n_resamples: int, confidence: float, seed: int):
    """Loop-per-resample reference for a 1-D input, from the same index draw."""
    n = a.size
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    stats = []
    for row in idx:
        aa, bb = a[row], b[row]
        ok = ~np.isnan(aa) & ~np.isnan(bb)
        if ok.any():
            stats.append(bb[ok].mean() - aa[ok].mean())
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return low, high, n_resamples - len(stats)


@pytest.mark.filterwarnings("error")
def test_identical_variants_give_exact_zero() -> None:
    a = _errors(0, (50,))
    res = paired_bootstrap(a, a.copy(), n_resamples=2_000)
    assert res.diff[0] == 0.0 and res.ci_low[0] == 0.0 and res.ci_high[0] == 0.0
    assert not res.significant[0]
    assert res.relative_reduction[0] == 0.0
    assert res.mae_a_ci_low[0] == res.mae_b_ci_low[0]
    assert res.mae_a_ci_high[0] == res.mae_b_ci_high[0]


def test_constant_improvement() -> None:
    a = _errors(1, (50,)) + 1.0  # >= 1 so that a - 0.5 stays a valid absolute error
    res = paired_bootstrap(a, a - 0.5, n_resamples=2_000)
    assert res.diff[0] == pytest.approx(-0.5, abs=1e-12)
    assert res.ci_low[0] == pytest.approx(-0.5, abs=1e-12)
    assert res.ci_high[0] == pytest.approx(-0.5, abs=1e-12)
    assert res.significant[0]
    mae_a = a.mean()
    assert res.mae_a[0] == pytest.approx(mae_a)
    assert res.mae_b[0] == pytest.approx(mae_a - 0.5)
    assert res.relative_reduction[0] == pytest.approx(0.5 / mae_a)


def test_noisy_large_shift_is_significant_and_covers_truth() -> None:
    rng = np.random.default_rng(5)
    a = rng.uniform(1.0, 2.0, size=50)
    b = np.clip(a - 0.6 + rng.normal(0.0, 0.3, size=50), 0.0, None)
    res = paired_bootstrap(a, b)
    assert res.significant[0]
    assert res.ci_low[0] < res.diff[0] < res.ci_high[0] < 0.0
    assert res.mae_a_ci_low[0] < res.mae_a[0] < res.mae_a_ci_high[0]
    assert res.mae_b_ci_low[0] < res.mae_b[0] < res.mae_b_ci_high[0]


def test_symmetric_null_is_not_significant() -> None:
    # b is a worse by 1 on half the items and better by 1 on the other half: diff is 0.
    a = np.full(40, 1.0)
    b = np.where(np.arange(40) % 2 == 0, 2.0, 0.0)
    res = paired_bootstrap(a, b)
    assert res.diff[0] == 0.0
    assert res.ci_low[0] < 0.0 < res.ci_high[0]
    assert not res.significant[0]


def test_matches_naive_loop_reference() -> None:
    rng = np.random.default_rng(9)
    a = rng.uniform(0, 2, size=12)
    b = rng.uniform(0, 2, size=12)
    a[[0, 3]] = np.nan
    b[[3, 7, 8]] = np.nan
    res = paired_bootstrap(a, b, n_resamples=3_000, confidence=0.9, seed=4)
    low, high, dropped = _naive(a, b, 3_000, 0.9, 4)
    assert res.ci_low[0] == pytest.approx(low, abs=1e-12)
    assert res.ci_high[0] == pytest.approx(high, abs=1e-12)
    assert res.n_resamples_dropped[0] == dropped


def test_dropped_resamples_are_counted() -> None:
    # One paired item out of 5: a resample misses it with probability (4/5)**5 ~ 0.33.
    a = np.array([1.0, np.nan, np.nan, np.nan, np.nan])
    b = np.array([0.0, 1.0, 1.0, 1.0, 1.0])
    res = paired_bootstrap(a, b, n_resamples=3_000, seed=2)
    _, _, dropped = _naive(a, b, 3_000, 0.95, 2)
    assert res.n_resamples_dropped[0] == dropped
    assert 0.25 * 3_000 < dropped < 0.42 * 3_000
    assert res.ci_low[0] == res.ci_high[0] == -1.0


def test_seeded_reproducibility() -> None:
    a, b = _errors(0, (3, 30)), _errors(1, (3, 30))
    first = paired_bootstrap(a, b, n_resamples=1_000, seed=123)
    again = paired_bootstrap(a, b, n_resamples=1_000, seed=123)
    other = paired_bootstrap(a, b, n_resamples=1_000, seed=124)
    assert first.to_records() == again.to_records()
    np.testing.assert_array_equal(first.diff, other.diff)  # point estimate is seed-free
    assert not np.array_equal(
        np.r_[first.ci_low, first.ci_high], np.r_[other.ci_low, other.ci_high]
    )


def test_nan_items_are_excluded_pairwise() -> None:
    a = np.array([1.0, np.nan, 2.0, 0.0, 1.0, 2.0])
    b = np.array([np.nan, 1.0, 1.0, 0.0, 0.0, 1.0])
    res = paired_bootstrap(a, b, n_resamples=1_000)
    assert res.n_items_paired[0] == 4 and res.n_items == 6
    assert res.mae_a[0] == pytest.approx((2 + 0 + 1 + 2) / 4)
    assert res.mae_b[0] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert res.diff[0] == pytest.approx(-3 / 4)
    # Values of the variant that IS scored on an unpaired item must not matter at all.
    a2, b2 = a.copy(), b.copy()
    a2[0] = 2.0
    b2[1] = 0.0
    assert paired_bootstrap(a2, b2, n_resamples=1_000).to_records() == res.to_records()


@pytest.mark.filterwarnings("error")
def test_dimension_without_paired_items_is_nan() -> None:
    a = np.array([[1.0, 2.0, 0.0], [np.nan, 1.0, np.nan]])
    b = np.array([[0.0, 1.0, 0.0], [1.0, np.nan, 1.0]])
    res = paired_bootstrap(a, b, n_resamples=500)
    assert res.n_items_paired.tolist() == [3, 0]
    assert res.n_resamples_dropped.tolist() == [0, 500]
    for name in ("mae_a", "mae_b", "diff", "ci_low", "ci_high", "relative_reduction"):
        assert np.isnan(getattr(res, name)[1]), name
    assert not res.significant[1]
    record = res.to_records()[1]
    assert record["diff"] is None and record["significant"] is False


def test_relative_reduction_nan_when_mae_a_is_zero() -> None:
    res = paired_bootstrap(np.zeros(5), np.ones(5), n_resamples=200)
    assert np.isnan(res.relative_reduction[0])
    assert res.significant[0] and res.ci_low[0] == res.ci_high[0] == 1.0


def test_2d_uses_one_resample_for_all_dimensions() -> None:
    a = _errors(0, (30,))
    b = _errors(1, (30,))
    # dim 1 repeats dim 0; dim 2 is dim 0 doubled. With shared resamples dim 1's CI is
    # identical and dim 2's is exactly twice dim 0's; independent resamples would not be.
    res = paired_bootstrap(np.stack([a, a, 2 * a]), np.stack([b, b, 2 * b]), n_resamples=2_000)
    assert res.n_dims == 3
    assert res.ci_low[0] == res.ci_low[1] and res.ci_high[0] == res.ci_high[1]
    assert res.ci_low[2] == pytest.approx(2 * res.ci_low[0], abs=1e-12)
    assert res.ci_high[2] == pytest.approx(2 * res.ci_high[0], abs=1e-12)
    # The 2-D run draws the same index matrix as a 1-D run of any single dimension.
    single = paired_bootstrap(a, b, n_resamples=2_000)
    assert single.n_dims == 1
    assert single.ci_low[0] == res.ci_low[0] and single.ci_high[0] == res.ci_high[0]


def test_to_records_is_strict_json() -> None:
    res = paired_bootstrap(_errors(0, (2, 10)), _errors(1, (2, 10)), n_resamples=100, seed=3)
    records = res.to_records()
    assert [r["dim"] for r in records] == [0, 1]
    assert records[0]["n_resamples"] == 100 and records[0]["seed"] == 3
    assert isinstance(records[0]["significant"], bool)
    assert isinstance(records[0]["n_items_paired"], int)
    json.dumps(records, allow_nan=False)


def test_result_arrays_are_read_only() -> None:
    res = paired_bootstrap(_errors(0, (10,)), _errors(1, (10,)), n_resamples=50)
    assert isinstance(res, BootstrapResult)
    with pytest.raises(ValueError):
        res.diff[0] = 1.0


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "pattern"),
    [
        (np.zeros(5), np.zeros(4), {}, r"same shape, got \(5,\) and \(4,\)"),
        (np.zeros((2, 5)), np.zeros((3, 5)), {}, r"got \(2, 5\) and \(3, 5\)"),
        (np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), {}, r"1-D .* or 2-D .* got \(1, 2, 3\)"),
        (np.zeros(0), np.zeros(0), {}, r"at least one dimension and one item"),
        (np.zeros((0, 4)), np.zeros((0, 4)), {}, r"at least one dimension and one item"),
        (np.array([1.0, -1.0]), np.zeros(2), {}, r"errors_a contains negative"),
        (np.zeros(2), np.array([np.inf, 0.0]), {}, r"errors_b contains inf"),
        (np.zeros(3), np.zeros(3), {"confidence": 0.0}, r"confidence must be strictly"),
        (np.zeros(3), np.zeros(3), {"confidence": 1.0}, r"confidence must be strictly"),
        (np.zeros(3), np.zeros(3), {"confidence": 95}, r"confidence must be strictly"),
        (np.zeros(3), np.zeros(3), {"confidence": float("nan")}, r"confidence must be"),
        (np.zeros(3), np.zeros(3), {"n_resamples": 0}, r"n_resamples must be >= 1"),
        (np.zeros(3), np.zeros(3), {"n_resamples": 10.0}, r"n_resamples must be an int"),
        (np.zeros(3), np.zeros(3), {"seed": 1.5}, r"seed must be an int"),
    ],
)
def test_validation(a: np.ndarray, b: np.ndarray, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        paired_bootstrap(a, b, **kwargs)
