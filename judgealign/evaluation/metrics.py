"""Per-dimension agreement between a judge and human expert labels.

Every function here looks at ONE rubric dimension: ``human[i]`` and ``judge[i]`` are the
scores of item ``i``. A score is an ``int`` level of the rubric scale or ``None`` (N/A).
Items where the judge failed to answer are flagged by ``failed[i] = True``.

Failures and N/A count (the headline MAE)
-----------------------------------------
A judge must not look better by failing, or by answering N/A, on the items it finds hard.
So the headline ``mae`` is the mean *charged* error over ALL items, where, on a scale whose
lowest level is ``lo`` and highest ``hi`` (see :func:`charged_errors`):

=======================  =======================  =====================================
human                    judge                    charge
=======================  =======================  =====================================
level ``h``              level ``j``              ``|h - j|``
N/A                      N/A                      0
level ``h``              failed, or N/A           ``max(h - lo, hi - h)``: the largest
                                                  error any level could have made
N/A                      failed, or a level       ``hi - lo``: the cost of an N/A
                                                  mismatch (the width of the scale)
=======================  =======================  =====================================

Answering N/A where the expert gave a level is charged exactly like a failure: abstaining is
never cheaper than the worst numeric answer, so it cannot hide hard items. A level where the
expert said N/A costs the whole scale, as much as any miss can. ``mae_scored`` keeps the old
figure -- the mean ``|h - j|`` over the items both sides scored -- as a secondary number,
always labelled as such.

Other metrics (N/A conventions)
-------------------------------
Let the *evaluated* items be all items whose judge call did not fail
(``n_items - n_failed``). Each evaluated item falls in exactly one class:

* **scored** -- both scores are numeric. Only these enter ``mae_scored``, ``qwk`` and
  ``spearman``.
* **both N/A** -- human and judge both say N/A. Counts as an agreement for ``exact``
  and ``within_one``.
* **N/A confusion** -- exactly one side says N/A. Counts as a disagreement for
  ``exact`` and ``within_one``; reported as ``n_na_human_only`` + ``n_na_judge_only``.

So ``exact`` and ``within_one`` are fractions of the evaluated items; ``qwk`` and
``spearman`` are computed on the scored items only, with scikit-learn's
``cohen_kappa_score(weights="quadratic", labels=levels)`` and SciPy's ``spearmanr``. Both are
NaN where they are undefined (no scored item; Spearman: fewer than two, or one side constant;
QWK: both sides constant on one and the same level, where kappa is 0/0); NaN becomes ``None``
in JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Agreement",
    "abs_errors",
    "agreement",
    "average_ranks",
    "charged_errors",
    "item_charge",
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
        Items where the judge failed.
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
        The headline: mean charged error over ALL ``n_items`` items, failures and N/A
        confusions charged as the module docstring says. NaN when ``n_items == 0``.
    mae_scored : float
        Secondary: mean ``|human - judge|`` over the scored items only. NaN when
        ``n_scored == 0``.
    exact : float
        Fraction of the evaluated (non-failed) items on which the two agree exactly:
        equal numeric scores, or both N/A. NaN when every item failed (or there are none).
    within_one : float
        As ``exact`` but numeric scores agree when ``|human - judge| <= 1``.
    qwk : float
        Quadratic-weighted Cohen's kappa over the scored items, with the rubric's
        ``levels`` as the category set. NaN when ``n_scored == 0`` or when both sides give
        every scored item one and the same level.
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
    mae_scored: float
    exact: float
    within_one: float
    qwk: float
    spearman: float

    def to_dict(self) -> dict[str, int | float | None]:
        """Return a plain, strictly JSON-able dict (one key per attribute; NaN -> None)."""
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


def _check_in_levels(name: str, scores: Sequence[int | None], allowed: set[int],
                     skip: np.ndarray | None = None) -> None:
    for i, value in enumerate(scores):
        if skip is not None and skip[i]:
            continue
        if value is not None and int(value) not in allowed:
            raise ValueError(f"{name}[{i}] = {int(value)} is not one of levels {sorted(allowed)}")


def item_charge(human: int | None, judge: int | None, failed: bool, lo: int, hi: int) -> float:
    """The charged error of one judgment on a scale ``[lo, hi]`` (see the module docstring).

    Parameters
    ----------
    human, judge
        Levels or ``None`` (N/A); ``judge`` is ignored when ``failed``.
    failed
        The judge failed to answer.
    lo, hi
        Lowest and highest level of the scale.
    """
    if human is None:
        # An expert N/A: only a judge N/A matches it; anything else misses the whole scale.
        return 0.0 if (judge is None and not failed) else float(hi - lo)
    if failed or judge is None:
        # No level from the judge: charge the worst a level could have cost on this item.
        return float(max(human - lo, hi - human))
    return float(abs(int(human) - int(judge)))


def charged_errors(
    human: Sequence[int | None],
    judge: Sequence[int | None],
    failed: Sequence[bool] | None = None,
    *,
    levels: Sequence[int],
) -> np.ndarray:
    """Per-item charged error of a judge for one dimension: the headline MAE's terms.

    Parameters
    ----------
    human, judge : sequence of int or None, length ``n_items``
        Scores per item; ``None`` is N/A.
    failed : sequence of bool, length ``n_items``, optional
        ``True`` where the judge failed. Default: no failures.
    levels : sequence of int
        The rubric scale; its min and max set the charges.

    Returns
    -------
    numpy.ndarray of float64, shape ``(n_items,)``
        Never NaN: every item has a cost (module docstring, "Failures and N/A count").

    Raises
    ------
    ValueError
        On unequal lengths, a non-int score, or a score outside ``levels`` (a failed
        judgment's judge entry is not checked).
    """
    failed_mask = _validate(human, judge, failed)
    scale = _check_levels(levels)
    allowed = set(scale.tolist())
    _check_in_levels("human", human, allowed)
    _check_in_levels("judge", judge, allowed, skip=failed_mask)
    lo, hi = int(scale[0]), int(scale[-1])
    return np.array([item_charge(h, j, bool(f), lo, hi)
                     for h, j, f in zip(human, judge, failed_mask, strict=True)],
                    dtype=np.float64)


def abs_errors(
    human: Sequence[int | None],
    judge: Sequence[int | None],
    failed: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-item absolute error over the items both sides scored (the secondary figure).

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
        NaN (N/A on either side, or failed). :func:`charged_errors` charges those instead.
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
    """Ranks starting at 1, ties receiving the mean of the ranks they span
    (``scipy.stats.rankdata(method="average")``).

    Parameters
    ----------
    x : array_like, shape ``(n,)``
        Values without NaN.

    Returns
    -------
    numpy.ndarray of float64, shape ``(n,)``
    """
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.empty(0, dtype=np.float64)
    return np.asarray(rankdata(x, method="average"), dtype=np.float64)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``, average ranks for ties).

    Parameters
    ----------
    x, y : array_like, shape ``(n,)``
        Paired numeric values without NaN.

    Returns
    -------
    float
        In ``[-1, 1]``; NaN when ``n < 2`` or either side is constant (rank variance 0).
    """
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    # Decided here, on the raw values, rather than by SciPy's warning-and-NaN path.
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    r = float(spearmanr(x, y).statistic)
    # Rounding can push |r| a hair past 1 for perfectly (anti-)monotone data.
    return min(1.0, max(-1.0, r))


def quadratic_weighted_kappa(human: np.ndarray, judge: np.ndarray, levels: Sequence[int]) -> float:
    """Cohen's kappa with quadratic weights:
    ``sklearn.metrics.cohen_kappa_score(human, judge, weights="quadratic", labels=levels)``.

    Weights use category indices of the sorted ``levels`` (``(i - j)**2 / (K - 1)**2``); for
    a contiguous integer scale these equal the score differences, and an unused extreme
    level only rescales them (kappa is unchanged).

    Parameters
    ----------
    human, judge : array_like of int, shape ``(n,)``
        Numeric scores, each one of ``levels``.
    levels : sequence of int
        The rubric scale (at least two distinct levels); order does not matter.

    Returns
    -------
    float
        NaN when ``n == 0`` or when both raters give every item one and the same level
        (the expected disagreement is 0 and kappa is 0/0).

    Raises
    ------
    ValueError
        On shapes that differ or a score outside ``levels`` (naming the side and index).
    """
    from sklearn.metrics import cohen_kappa_score

    scale = _check_levels(levels)
    human = np.asarray(human, dtype=np.int64)
    judge = np.asarray(judge, dtype=np.int64)
    if human.shape != judge.shape or human.ndim != 1:
        raise ValueError(
            f"human and judge must be 1-D of equal length, got {human.shape} and {judge.shape}"
        )
    allowed = set(scale.tolist())
    # scikit-learn silently drops values outside ``labels``; a stray level is a bug here.
    _check_in_levels("human", human.tolist(), allowed)
    _check_in_levels("judge", judge.tolist(), allowed)
    if human.size == 0 or (np.all(human == human[0]) and np.all(judge == human[0])):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(cohen_kappa_score(human, judge, weights="quadratic",
                                       labels=scale.tolist()))


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
        The rubric scale, e.g. ``[1, 2, 3]`` or ``range(5)``: the category set of the QWK,
        the allowed numeric scores and (its min and max) the charges of the headline MAE.
        At least two distinct ints.
    failed : sequence of bool, length ``n_items``, optional
        ``True`` where the judge failed to answer; such items are charged in ``mae``,
        excluded from every other metric and counted in ``n_failed``. Their judge entry
        must still be an int or None but is not checked against ``levels``. Default: no
        failures.

    Returns
    -------
    Agreement
        See :class:`Agreement` and the module docstring for the charges and N/A conventions.

    Raises
    ------
    ValueError
        On unequal lengths, a score that is neither an int nor None, or a numeric score
        outside ``levels`` (the message names the sequence, index and value).
    """
    charged = charged_errors(human, judge, failed, levels=levels)
    failed_mask = _validate(human, judge, failed)
    scale = _check_levels(levels)

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
        mae=float(charged.mean()) if n_items else nan,
        mae_scored=float(diff.mean()) if n_scored else nan,
        exact=exact,
        within_one=within_one,
        qwk=quadratic_weighted_kappa(h_arr, j_arr, scale) if n_scored else nan,
        spearman=spearman(h_arr, j_arr),
    )
