"""Per-dimension agreement between a judge and human expert labels.

Every function here looks at ONE rubric dimension: ``human[i]`` and ``judge[i]`` are the
scores of item ``i``. A score is an ``int`` level of the rubric scale or ``None`` (N/A).
Items where the judge failed to answer are flagged by ``failed[i] = True``; they are
excluded from every metric and only counted.

N/A conventions (the same wording is used in the docs)
------------------------------------------------------
Let the *evaluated* items be all items whose judge call did not fail
(``n_items - n_failed``). Each evaluated item falls in exactly one class:

* **scored** -- both scores are numeric. Only these enter ``mae``, ``qwk`` and
  ``spearman``.
* **both N/A** -- human and judge both say N/A. Counts as an agreement for ``exact``
  and ``within_one``; excluded from ``mae``, ``qwk`` and ``spearman``.
* **N/A confusion** -- exactly one side says N/A. Counts as a disagreement for
  ``exact`` and ``within_one``; excluded from ``mae``, ``qwk`` and ``spearman``, and
  reported separately as ``n_na_human_only`` + ``n_na_judge_only``.

So ``exact`` and ``within_one`` are fractions of the evaluated items, while ``mae``,
``qwk`` and ``spearman`` are computed on the scored items only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Agreement",
    "abs_errors",
    "agreement",
    "average_ranks",
    "quadratic_weighted_kappa",
    "spearman",
]


@dataclass(frozen=True)
class Agreement:
    """Agreement of a judge with human labels on one rubric dimension.

    Counts always satisfy ``n_items == n_failed + n_scored + n_both_na + n_na_confusion``
    and ``n_na_confusion == n_na_human_only + n_na_judge_only``.

    Attributes
    ----------
    n_items : int
        All items passed in, failed ones included.
    n_failed : int
        Items where the judge failed; excluded from every metric below.
    n_scored : int
        Non-failed items where both scores are numeric.
    n_both_na : int
        Non-failed items where both scores are N/A.
    n_na_confusion : int
        Non-failed items where exactly one score is N/A.
    n_na_human_only : int
        N/A confusions where the human said N/A and the judge gave a score.
    n_na_judge_only : int
        N/A confusions where the judge said N/A and the human gave a score.
    mae : float
        Mean absolute error ``|human - judge|`` in scale points over the scored items.
        NaN when ``n_scored == 0``.
    exact : float
        Fraction of the evaluated (non-failed) items on which the two agree exactly:
        equal numeric scores, or both N/A. An N/A confusion is a disagreement. NaN when
        every item failed (or there are no items).
    within_one : float
        As ``exact`` but numeric scores agree when ``|human - judge| <= 1``.
    qwk : float
        Quadratic-weighted Cohen's kappa over the scored items, with the rubric's
        ``levels`` as the category set. NaN when ``n_scored == 0`` or when the expected
        disagreement is zero, i.e. both raters give every scored item one and the same
        level (kappa is 0/0 there).
    spearman : float
        Spearman rank correlation over the scored items (ties get average ranks). NaN when
        ``n_scored < 2`` or when either side is constant.
    """

    n_items: int
    n_failed: int
    n_scored: int
    n_both_na: int
    n_na_confusion: int
    n_na_human_only: int
    n_na_judge_only: int
    mae: float
    exact: float
    within_one: float
    qwk: float
    spearman: float

    def to_dict(self) -> dict[str, int | float | None]:
        """Return a plain, strictly JSON-able dict.

        Returns
        -------
        dict
            One key per attribute. NaN metrics become ``None`` because NaN is not valid
            JSON.
        """
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(value: int | float) -> int | float | None:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _is_int_score(value: object) -> bool:
    # bool is an int subclass; a stray True/False is a bug upstream, not the level 1/0.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_scores(name: str, scores: Sequence[int | None]) -> None:
    for i, value in enumerate(scores):
        if value is not None and not _is_int_score(value):
            raise ValueError(
                f"{name}[{i}] = {value!r} ({type(value).__name__}): a score must be an int "
                "level or None for N/A"
            )


def _validate(
    human: Sequence[int | None],
    judge: Sequence[int | None],
    failed: Sequence[bool] | None,
) -> np.ndarray:
    """Check types and lengths; return the ``failed`` mask, shape ``(n_items,)``."""
    if len(human) != len(judge):
        raise ValueError(
            f"human and judge must have equal lengths, got {len(human)} and {len(judge)}"
        )
    _check_scores("human", human)
    _check_scores("judge", judge)
    if failed is None:
        return np.zeros(len(human), dtype=bool)
    if len(failed) != len(human):
        raise ValueError(
            f"failed must have one entry per item: got {len(failed)} for {len(human)} items"
        )
    for i, value in enumerate(failed):
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"failed[{i}] = {value!r}: expected a bool")
    return np.asarray(failed, dtype=bool).reshape(len(human))


def _check_levels(levels: Sequence[int]) -> np.ndarray:
    """Validate the rubric scale; return it sorted, shape ``(n_levels,)``."""
    for i, value in enumerate(levels):
        if not _is_int_score(value):
            raise ValueError(f"levels[{i}] = {value!r}: levels must be ints")
    arr = np.asarray(sorted(int(v) for v in levels), dtype=np.int64)
    if arr.size < 2:
        raise ValueError(f"levels must hold at least two distinct levels, got {list(levels)}")
    if np.any(arr[1:] == arr[:-1]):
        raise ValueError(f"levels must be distinct, got {list(levels)}")
    return arr


def abs_errors(
    human: Sequence[int | None],
    judge: Sequence[int | None],
    failed: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-item absolute error of a judge against human labels, for one dimension.

    This is the input of :func:`judgealign.evaluation.bootstrap.paired_bootstrap`.

    Parameters
    ----------
    human, judge : sequence of int or None, length ``n_items``
        Scores per item; ``None`` is N/A.
    failed : sequence of bool, length ``n_items``, optional
        ``True`` where the judge failed. Default: no failures.

    Returns
    -------
    errors : numpy.ndarray of float64, shape ``(n_items,)``
        ``|human[i] - judge[i]|`` where both are numeric and the judge did not fail, else
        NaN (N/A on either side, or failed).
    valid : numpy.ndarray of bool, shape ``(n_items,)``
        ``True`` exactly where ``errors`` is not NaN.

    Raises
    ------
    ValueError
        On unequal lengths or a score that is neither an int nor None.
    """
    failed_mask = _validate(human, judge, failed)
    n = len(human)
    valid = np.array(
        [not failed_mask[i] and human[i] is not None and judge[i] is not None for i in range(n)],
        dtype=bool,
    )
    errors = np.full(n, np.nan, dtype=np.float64)
    for i in np.flatnonzero(valid):
        errors[i] = abs(int(human[i]) - int(judge[i]))
    return errors, valid


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties receiving the mean of the ranks they span.

    Parameters
    ----------
    x : array_like, shape ``(n,)``
        Values without NaN.

    Returns
    -------
    numpy.ndarray of float64, shape ``(n,)``
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_group = np.empty(n, dtype=bool)
    starts_group[0] = True
    starts_group[1:] = sorted_x[1:] != sorted_x[:-1]
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)  # 0-based sorted position where each group starts
    last = np.append(first[1:], n) - 1
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation: Pearson correlation of average ranks.

    Parameters
    ----------
    x, y : array_like, shape ``(n,)``
        Paired numeric values without NaN.

    Returns
    -------
    float
        In ``[-1, 1]``; NaN when ``n < 2`` or either side is constant (rank variance 0).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    # Test constancy on the raw values so the NaN decision never hinges on float rounding.
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    r = float(np.dot(rx, ry) / math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry))))
    # Rounding can push |r| a hair past 1 for perfectly (anti-)monotone data.
    return min(1.0, max(-1.0, r))


def quadratic_weighted_kappa(human: np.ndarray, judge: np.ndarray, levels: Sequence[int]) -> float:
    """Cohen's kappa with quadratic weights, from the confusion matrix.

    With ``K`` levels sorted ascending and category indices ``i, j`` in ``0..K-1``:
    ``O`` is the ``K x K`` confusion matrix of counts (rows human, columns judge),
    ``E = outer(row sums, column sums) / n`` the counts expected under independence,
    ``W[i, j] = (i - j)**2 / (K - 1)**2`` and ``kappa = 1 - sum(W * O) / sum(W * E)``.
    Weights use category indices, as ``sklearn.metrics.cohen_kappa_score`` does with
    ``labels=levels``; for a contiguous integer scale these equal the score differences.

    Parameters
    ----------
    human, judge : array_like of int, shape ``(n,)``
        Numeric scores, each one of ``levels``.
    levels : sequence of int
        The rubric scale (at least two distinct levels); order does not matter.

    Returns
    -------
    float
        NaN when ``n == 0`` or when ``sum(W * E) == 0`` (both raters constant on the same
        level, where kappa is 0/0).
    """
    scale = _check_levels(levels)
    human = np.asarray(human, dtype=np.int64)
    judge = np.asarray(judge, dtype=np.int64)
    if human.shape != judge.shape or human.ndim != 1:
        raise ValueError(
            f"human and judge must be 1-D of equal length, got {human.shape} and {judge.shape}"
        )
    if human.size == 0:
        return float("nan")
    hi = np.searchsorted(scale, human)
    ji = np.searchsorted(scale, judge)
    for name, values, idx in (("human", human, hi), ("judge", judge, ji)):
        bad = (idx >= scale.size) | (scale[np.minimum(idx, scale.size - 1)] != values)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{i}] = {int(values[i])} is not one of levels {list(scale)}")
    k = scale.size
    observed = np.zeros((k, k), dtype=np.float64)
    np.add.at(observed, (hi, ji), 1.0)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / human.size
    cat = np.arange(k, dtype=np.float64)
    weights = (cat[:, None] - cat[None, :]) ** 2 / (k - 1) ** 2
    denominator = float(np.sum(weights * expected))
    if denominator == 0.0:
        return float("nan")
    return 1.0 - float(np.sum(weights * observed)) / denominator


def agreement(
    human: Sequence[int | None],
    judge: Sequence[int | None],
    *,
    levels: Sequence[int],
    failed: Sequence[bool] | None = None,
) -> Agreement:
    """Agreement metrics of a judge with human labels on one rubric dimension.

    Parameters
    ----------
    human, judge : sequence of int or None, length ``n_items``
        Scores per item; ``None`` is N/A.
    levels : sequence of int
        The rubric scale, e.g. ``[1, 2, 3]`` or ``range(5)``: the category set of the QWK
        and the allowed numeric scores. At least two distinct ints.
    failed : sequence of bool, length ``n_items``, optional
        ``True`` where the judge failed to answer; such items are excluded from every
        metric and counted in ``n_failed``. Their judge entry must still be an int or
        None but is not checked against ``levels``. Default: no failures.

    Returns
    -------
    Agreement
        See :class:`Agreement` for the exact N/A conventions.

    Raises
    ------
    ValueError
        On unequal lengths, a score that is neither an int nor None, or a numeric score
        outside ``levels`` (the message names the sequence, index and value).
    """
    failed_mask = _validate(human, judge, failed)
    scale = _check_levels(levels)
    allowed = set(scale.tolist())
    for name, scores, skip in (("human", human, None), ("judge", judge, failed_mask)):
        for i, value in enumerate(scores):
            if skip is not None and skip[i]:
                continue
            if value is not None and int(value) not in allowed:
                raise ValueError(
                    f"{name}[{i}] = {int(value)} is not one of levels {scale.tolist()}"
                )

    n_items = len(human)
    n_failed = int(failed_mask.sum())
    h_scores: list[int] = []
    j_scores: list[int] = []
    n_both_na = n_na_human_only = n_na_judge_only = 0
    for i in range(n_items):
        if failed_mask[i]:
            continue
        h, j = human[i], judge[i]
        if h is None and j is None:
            n_both_na += 1
        elif h is None:
            n_na_human_only += 1
        elif j is None:
            n_na_judge_only += 1
        else:
            h_scores.append(int(h))
            j_scores.append(int(j))

    h_arr = np.asarray(h_scores, dtype=np.int64)
    j_arr = np.asarray(j_scores, dtype=np.int64)
    diff = np.abs(h_arr - j_arr)
    n_scored = int(h_arr.size)
    n_evaluated = n_items - n_failed
    nan = float("nan")

    mae = float(diff.mean()) if n_scored else nan
    if n_evaluated:
        exact = (int(np.sum(diff == 0)) + n_both_na) / n_evaluated
        within_one = (int(np.sum(diff <= 1)) + n_both_na) / n_evaluated
    else:
        exact = within_one = nan

    return Agreement(
        n_items=n_items,
        n_failed=n_failed,
        n_scored=n_scored,
        n_both_na=n_both_na,
        n_na_confusion=n_na_human_only + n_na_judge_only,
        n_na_human_only=n_na_human_only,
        n_na_judge_only=n_na_judge_only,
        mae=mae,
        exact=exact,
        within_one=within_one,
        qwk=quadratic_weighted_kappa(h_arr, j_arr, scale),
        spearman=spearman(h_arr, j_arr),
    )
