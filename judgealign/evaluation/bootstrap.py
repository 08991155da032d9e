"""Paired bootstrap confidence intervals for the MAE difference of two judge variants.

Both variants are scored on the same items, so the items are resampled jointly: one
resample of item indices serves variant ``a``, variant ``b`` and every rubric dimension.
This keeps the per-item correlation between the variants (and between dimensions), which
is what makes the paired interval much tighter than two independent ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BootstrapResult", "paired_bootstrap"]


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Result of :func:`paired_bootstrap`; every array has shape ``(n_dims,)``.

    A 1-D input is reported as one dimension (``n_dims == 1``). The arrays are read-only.

    Attributes
    ----------
    mae_a, mae_b : numpy.ndarray of float64
        Mean error of each variant over the paired items of the dimension (items valid
        in both ``a`` and ``b``). NaN when a dimension has no paired item.
    diff : numpy.ndarray of float64
        Point estimate of ``mae_b - mae_a`` on the full sample, computed as the mean of
        the per-item differences ``b - a`` over the paired items (equal to
        ``mae_b - mae_a`` up to rounding). Negative means ``b`` is better.
    ci_low, ci_high : numpy.ndarray of float64
        Percentile confidence interval of ``diff`` at level ``confidence``.
    significant : numpy.ndarray of bool
        ``True`` when the interval excludes 0 (``ci_low > 0`` or ``ci_high < 0``); False
        whenever the interval is NaN.
    relative_reduction : numpy.ndarray of float64
        ``(mae_a - mae_b) / mae_a``; NaN when ``mae_a`` is 0 or NaN.
    n_items_paired : numpy.ndarray of int64
        Items valid (not NaN) in both variants, per dimension.
    mae_a_ci_low, mae_a_ci_high, mae_b_ci_low, mae_b_ci_high : numpy.ndarray of float64
        Percentile intervals of ``mae_a`` and ``mae_b`` from the same resamples.
    n_resamples_dropped : numpy.ndarray of int64
        Resamples that drew no paired item of the dimension; their statistic is
        undefined and they are left out of that dimension's percentiles.
    n_items : int
        Items per dimension in the input (paired or not).
    n_resamples : int
        Resamples drawn.
    confidence : float
        Confidence level of every interval.
    seed : int
        Seed of the ``numpy.random.default_rng`` that drew the resamples.
    """

    mae_a: np.ndarray
    mae_b: np.ndarray
    diff: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    significant: np.ndarray
    relative_reduction: np.ndarray
    n_items_paired: np.ndarray
    mae_a_ci_low: np.ndarray
    mae_a_ci_high: np.ndarray
    mae_b_ci_low: np.ndarray
    mae_b_ci_high: np.ndarray
    n_resamples_dropped: np.ndarray
    n_items: int
    n_resamples: int
    confidence: float
    seed: int

    @property
    def n_dims(self) -> int:
        """Number of rubric dimensions reported."""
        return int(self.diff.shape[0])

    def to_records(self) -> list[dict[str, Any]]:
        """One plain, strictly JSON-able dict per dimension, in input order.

        Returns
        -------
        list of dict
            Keys: ``dim`` (row index in the input), every per-dimension attribute, and
            ``n_items``, ``n_resamples``, ``confidence``, ``seed``. Values are Python
            ``int``/``float``/``bool``; NaN becomes ``None`` because NaN is not valid JSON.
        """
        per_dim = (
            "mae_a",
            "mae_a_ci_low",
            "mae_a_ci_high",
            "mae_b",
            "mae_b_ci_low",
            "mae_b_ci_high",
            "diff",
            "ci_low",
            "ci_high",
            "significant",
            "relative_reduction",
            "n_items_paired",
            "n_resamples_dropped",
        )
        records: list[dict[str, Any]] = []
        for d in range(self.n_dims):
            record: dict[str, Any] = {"dim": d}
            for name in per_dim:
                record[name] = _plain(getattr(self, name)[d])
            record["n_items"] = self.n_items
            record["n_resamples"] = self.n_resamples
            record["confidence"] = self.confidence
            record["seed"] = self.seed
            records.append(record)
        return records


def _plain(value: np.generic) -> int | float | bool | None:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    as_float = float(value)
    return None if math.isnan(as_float) else as_float


def _as_errors(name: str, errors: np.ndarray) -> np.ndarray:
    arr = np.asarray(errors, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n_items,) or 2-D (n_dims, n_items), got {arr.shape}")
    if np.any(np.isinf(arr)):
        raise ValueError(f"{name} contains inf; use NaN for an item a variant did not score")
    # Signed errors (human - judge) would silently bias both MAEs; insist on absolute ones.
    if np.any(arr < 0):
        raise ValueError(f"{name} contains negative values; expected absolute errors (or NaN)")
    return arr


def _mean_or_nan(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast_shapes(sums.shape, counts.shape), np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def _percentile_ci(
    samples: np.ndarray, keep: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of ``samples`` over the rows where ``keep``.

    ``samples`` and ``keep`` have shape ``(n_resamples, n_dims)``; returns two arrays of
    shape ``(n_dims,)``, NaN for a column with no kept row.
    """
    tail = (1.0 - confidence) / 2.0
    n_dims = samples.shape[1]
    low = np.full(n_dims, np.nan)
    high = np.full(n_dims, np.nan)
    # A loop over dimensions (not resamples); nanquantile would warn on all-NaN columns.
    for d in range(n_dims):
        values = samples[keep[:, d], d]
        if values.size:
            low[d], high[d] = np.quantile(values, [tail, 1.0 - tail])
    return low, high


def paired_bootstrap(
    errors_a: np.ndarray,
    errors_b: np.ndarray,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Paired percentile bootstrap of the mean-error difference ``b - a``.

    Item indices are drawn with replacement once, as an ``(n_resamples, n_items)`` matrix
    from ``numpy.random.default_rng(seed)``; every resample is applied to both variants
    and to every dimension, since the items are the sampling unit. Per dimension, the
    statistic of a resample is ``mean(b) - mean(a)`` over the drawn items valid in both
    variants (pairwise-complete, counted with multiplicity). A resample that draws no such
    item has an undefined statistic; it is dropped from that dimension's percentiles and
    counted in ``n_resamples_dropped``. Intervals are plain percentile intervals
    (``numpy.quantile``, linear interpolation) at ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2``.

    Parameters
    ----------
    errors_a, errors_b : array_like of float, shape ``(n_items,)`` or ``(n_dims, n_items)``
        Per-item absolute errors of the two variants on the SAME items in the same order
        (e.g. from :func:`judgealign.evaluation.metrics.abs_errors`). NaN marks an item the
        variant did not score on that dimension. Values must be >= 0 or NaN.
    n_resamples : int, default 10_000
        Bootstrap resamples, >= 1.
    confidence : float, default 0.95
        Confidence level, strictly between 0 and 1.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``; the same seed gives the same result.

    Returns
    -------
    BootstrapResult
        Per-dimension arrays of shape ``(n_dims,)`` (``n_dims == 1`` for 1-D input).

    Raises
    ------
    ValueError
        If the shapes differ (the message gives both), the inputs are not 1-D or 2-D, have
        no item or no dimension, hold inf or negative values, ``n_resamples < 1`` or
        ``confidence`` is not in ``(0, 1)``.

    Notes
    -----
    Memory is ``O(n_resamples * n_items)`` for the index and count matrices, and time is
    dominated by one ``(n_resamples, n_items) @ (n_items, n_dims)`` product per statistic.
    """
    a = _as_errors("errors_a", errors_a)
    b = _as_errors("errors_b", errors_b)
    if a.shape != b.shape:
        raise ValueError(
            f"errors_a and errors_b must have the same shape, got {a.shape} and {b.shape}"
        )
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise ValueError(f"n_resamples must be an int, got {n_resamples!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:  # also rejects NaN
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if a.ndim == 1:
        a = a[None, :]
        b = b[None, :]
    n_dims, n_items = a.shape
    if n_dims == 0 or n_items == 0:
        raise ValueError(f"need at least one dimension and one item, got shape {a.shape}")

    paired = ~np.isnan(a) & ~np.isnan(b)  # (n_dims, n_items)
    # Zero-filled copies let masked sums be plain matrix products (NaN * 0 would be NaN).
    a0 = np.where(paired, a, 0.0)
    b0 = np.where(paired, b, 0.0)
    # Differences are summed directly (not as mean(b) - mean(a)) so that identical or
    # uniformly shifted variants give exactly 0 or the shift, without cancellation error.
    d0 = np.where(paired, b - a, 0.0)
    w = paired.astype(np.float64)

    n_paired = paired.sum(axis=1)
    mae_a = _mean_or_nan(a0.sum(axis=1), n_paired)
    mae_b = _mean_or_nan(b0.sum(axis=1), n_paired)
    diff = _mean_or_nan(d0.sum(axis=1), n_paired)

    rng = np.random.default_rng(int(seed))
    n_resamples = int(n_resamples)
    idx = rng.integers(0, n_items, size=(n_resamples, n_items))
    # Multiplicity of each item in each resample: a sum over drawn indices equals
    # counts @ values, which vectorises all resamples and dimensions in one product.
    offsets = (np.arange(n_resamples, dtype=np.int64) * n_items)[:, None]
    counts = np.bincount((idx + offsets).ravel(), minlength=n_resamples * n_items)
    counts = counts.reshape(n_resamples, n_items).astype(np.float64)

    boot_n = counts @ w.T  # (n_resamples, n_dims); integer-valued, exact in float64
    keep = boot_n > 0
    boot_a = _mean_or_nan(counts @ a0.T, boot_n)
    boot_b = _mean_or_nan(counts @ b0.T, boot_n)
    boot_d = _mean_or_nan(counts @ d0.T, boot_n)

    ci_low, ci_high = _percentile_ci(boot_d, keep, confidence)
    a_low, a_high = _percentile_ci(boot_a, keep, confidence)
    b_low, b_high = _percentile_ci(boot_b, keep, confidence)

    significant = (ci_low > 0.0) | (ci_high < 0.0)  # NaN compares False
    relative = np.full(n_dims, np.nan)
    np.divide(mae_a - mae_b, mae_a, out=relative, where=mae_a > 0.0)

    arrays = {
        "mae_a": mae_a,
        "mae_b": mae_b,
        "diff": diff,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "significant": significant,
        "relative_reduction": relative,
        "n_items_paired": n_paired.astype(np.int64),
        "mae_a_ci_low": a_low,
        "mae_a_ci_high": a_high,
        "mae_b_ci_low": b_low,
        "mae_b_ci_high": b_high,
        "n_resamples_dropped": (n_resamples - keep.sum(axis=0)).astype(np.int64),
    }
    for arr in arrays.values():
        arr.setflags(write=False)
    return BootstrapResult(
        **arrays,
        n_items=int(n_items),
        n_resamples=n_resamples,
        confidence=float(confidence),
        seed=int(seed),
    )
