"""Judgments as distributions: level probabilities, score policies and calibration.

A judgment's *level probabilities* (``DimensionResult.probabilities``) map every level label of
the dimension (``"1"``, ``"2"`` ..., plus ``"N/A"`` where the dimension allows it) to a
probability; they sum to 1. Their *source* is

* ``"logprobs"`` -- read from the LM's token log probabilities at the score position, in the
  same call that produced the answer (no extra LM call): the embedded engine reports each
  level's probability directly (chain rule over the level's tokens, renormalised over the
  levels the grammar allows); a litellm model that returns ``logprobs``/``top_logprobs`` is
  read with :func:`probabilities_from_logprobs`;
* ``"sampled"`` -- the LM gave no log probabilities: all the mass is on the sampled level.

A *score policy* turns a judgment into its score:

* ``sampled`` -- the level the LM wrote (judgealign's behaviour before policies existed);
* ``expected`` -- N/A when the probability of N/A is above one half; otherwise the level
  nearest to the probability-weighted mean of the numeric levels (their probabilities
  renormalised without N/A; a mean half-way between two levels goes to the lower one);
* ``calibrated`` -- the point prediction of the dimension's :class:`Calibration` (below);
  with no calibration fitted, ``expected``.

Calibration
-----------
MemAlign fits one :class:`Calibration` per dimension on the training labels. Its features of a
judgment are the level probabilities and the similarity-weighted label distribution of the
episodes retrieved for it (weights: cosine similarity, floored at 0; all zeros when nothing
was retrieved). The training features come from judging every training item with its own
episode, and every episode with identical inputs, left out of retrieval, so the judge never
sees the label it is calibrated against (guidelines distilled from the item may still
reflect it; they are general rules and cannot be re-distilled per item).

Three candidates are compared on a grouped K-fold cross-validation of the training rows
(``K = min(5, groups)``; items with identical inputs share a group), by the mean charged
error (:func:`charge`, the charges of :mod:`judgealign.evaluation.metrics`):

* ``prior`` -- the training labels' distribution (its point is the training median);
* ``identity`` -- the judge's own distribution and its ``expected`` level;
* ``logistic`` -- multinomial logistic regression (scikit-learn, L2, ``C = 1``) from the
  features to the human level.

The choice goes from the simplest candidate up: ``prior`` unless ``identity`` beats it, then
``logistic`` if it beats the one chosen so far, where *beats* means a mean CV error lower by
more than :data:`SE_MARGIN` (2) standard errors of the per-row error differences (stored in
``cv_se``; about a one-sided 95% test). On 20-50 labels CV errors differ by noise: with no
margin, and still with one standard error, a candidate that won the training CV by a tenth of
a level (two rows of 24) went on to lose to the prior on held-out items (measured with
``benchmarks.calibration --dry-run``), and the point of calibration is never to be worse than
the constant. ``reason`` says what was chosen and why.

Logistic regression was chosen over isotonic regression on the expected score because it can
use the neighbours' label distribution as well as the judge's (isotonic regression maps one
score, monotonically: a judge that ranks nothing, as the embedded 135M model with Spearman
about 0, leaves it nothing to work with), and with its L2 penalty and 2 x (levels) features it
stays stable on 20-50 labels. With fewer than
:data:`MIN_LABELS` judged training items (or a single group), nothing is fitted (kind
``none``) and the ``calibrated`` policy scores as ``expected``.

A calibrated distribution's point prediction minimises the expected charged error: without
N/A that is the (lower) median of the distribution.

A calibration is stored in the judge's state as plain numbers (coefficients, the prior, the
cross-validated errors and the training rows it was fitted on). On load it is verified: shapes
and ranges, the prior against the stored rows, the choice against the stored errors, and the
logistic coefficients against the stored rows (the gradient of the regularised log-loss must
vanish at them, so an edited coefficient or row is refused). ``unalign`` refits it from the
rows that neither came from nor retrieved a forgotten item, or drops it when too few remain.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from judgealign.signatures.rubric import NA, format_score

POLICIES: tuple[str, ...] = ("sampled", "expected", "calibrated")
DEFAULT_POLICY = "calibrated"
SOURCES: tuple[str, ...] = ("logprobs", "sampled")
KINDS: tuple[str, ...] = ("logistic", "prior", "identity", "none")
TOP_LOGPROBS = 20  # OpenAI's cap; more alternatives than any rubric has levels
MIN_LABELS = 8  # below this a 5-fold CV has folds of one item: no basis for a choice
CV_FOLDS = 5
SE_MARGIN = 2.0  # standard errors a candidate must win the training CV by (see above)
DEFAULT_C = 1.0
# Verification of stored logistic coefficients: the largest gradient component of the
# averaged, regularised log-loss they may leave. Fits end near 1e-9 (measured); an edit of
# one coefficient by 1e-3 moved it to about 3e-5 on 30 rows.
_FIT_TOL = 1e-10
_GRADIENT_TOL = 1e-6
# A level ends at one of these (JSON string or value end, a new line in chat formats).
_TERMINATORS = frozenset('"\n,}] \t\r')


# --- level labels and distributions ---------------------------------------------------------


def level_labels(scale: Sequence[int], allows_na: bool) -> list[str]:
    """The level labels of a dimension: the scale as text, ``"N/A"`` last when allowed."""
    return [str(level) for level in scale] + ([NA] if allows_na else [])


def one_hot(label: str, labels: Sequence[str]) -> dict[str, float]:
    """All the mass on ``label``."""
    return {lab: 1.0 if lab == label else 0.0 for lab in labels}


def _normalised(mass: Mapping[str, float], labels: Sequence[str]) -> dict[str, float] | None:
    total = sum(max(float(mass.get(lab, 0.0)), 0.0) for lab in labels)
    if not math.isfinite(total) or total <= 0.0:
        return None
    return {lab: max(float(mass.get(lab, 0.0)), 0.0) / total for lab in labels}


def charge(human: str, judge: str, lo: int, hi: int) -> float:
    """The error of ``judge`` against ``human`` (level labels), charged as
    :func:`judgealign.evaluation.metrics.item_charge` charges it: an expert N/A is matched only
    by N/A (anything else costs ``hi - lo``); an N/A against an expert level ``h`` costs
    ``max(h - lo, hi - h)``; two levels cost their distance."""
    if human == NA:
        return 0.0 if judge == NA else float(hi - lo)
    h = int(human)
    if judge == NA:
        return float(max(h - lo, hi - h))
    return float(abs(h - int(judge)))


def bayes_label(dist: Mapping[str, float], scale: Sequence[int]) -> str:
    """The label with the least expected :func:`charge` under ``dist`` (without N/A: the lower
    median of the distribution). Ties go to the lowest level; N/A is chosen only when it is
    strictly better."""
    lo, hi = min(scale), max(scale)
    labels = list(dist)
    best, best_cost = None, math.inf
    for cand in [lab for lab in labels if lab != NA] + [lab for lab in labels if lab == NA]:
        cost = sum(p * charge(h, cand, lo, hi) for h, p in dist.items() if p > 0.0)
        if cost < best_cost - 1e-12:
            best, best_cost = cand, cost
    assert best is not None
    return best


def expected_label(dist: Mapping[str, float], scale: Sequence[int]) -> str:
    """The ``expected`` policy: N/A when ``P(N/A) > 1/2``, else the level nearest to the mean
    of the numeric levels weighted by their (renormalised) probabilities; ties go down."""
    p_na = float(dist.get(NA, 0.0))
    numeric = {int(lab): float(p) for lab, p in dist.items() if lab != NA}
    mass = sum(numeric.values())
    if p_na > 0.5 or mass <= 0.0:
        return NA if NA in dist else str(min(scale))
    mean = sum(level * p for level, p in numeric.items()) / mass
    return str(min(scale, key=lambda level: (abs(level - mean), level)))


def label_of(score: int | None) -> str:
    return format_score(score)


def score_of(label: str) -> int | None:
    return None if label == NA else int(label)


# --- reading log probabilities ----------------------------------------------------------------


def logprob_request(lm: Any) -> dict[str, Any]:
    """Per-call options asking ``lm`` for token log probabilities (``{}`` when it does not
    declare them: DSPy raises for providers without logprobs, e.g. Anthropic)."""
    try:
        params = set(getattr(lm, "supported_params", None) or ())
    except Exception:  # a model litellm knows nothing about: do not ask
        return {}
    if "logprobs" not in params:
        return {}
    request: dict[str, Any] = {"logprobs": True}
    if "top_logprobs" in params:
        request["top_logprobs"] = TOP_LOGPROBS
    return request


def _get(entry: Any, key: str, default: Any = None) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(key, default)
    return getattr(entry, key, default)


def _content(logprobs: Any) -> list[Any]:
    """The per-token entries of a ``logprobs`` value as DSPy returns it (OpenAI's shape:
    ``{"content": [{"token", "logprob", "top_logprobs": [...]}, ...]}``) or a bare list."""
    if logprobs is None:
        return []
    content = _get(logprobs, "content", None) if not isinstance(logprobs, list) else logprobs
    return list(content or [])


def _alternatives(entry: Any) -> dict[str, float]:
    """Token text -> log probability at one position: the top alternatives and the chosen
    token (providers differ on whether the chosen one is among the top)."""
    out: dict[str, float] = {}
    for alt in _get(entry, "top_logprobs", None) or _get(entry, "top", None) or []:
        token, lp = _get(alt, "token"), _get(alt, "logprob")
        if isinstance(token, str) and isinstance(lp, int | float) and math.isfinite(lp):
            out.setdefault(token, float(lp))
    token, lp = _get(entry, "token"), _get(entry, "logprob")
    if isinstance(token, str) and isinstance(lp, int | float) and math.isfinite(lp):
        out.setdefault(token, float(lp))
    return out


def _value_start(text: str, field_name: str) -> int | None:
    """Offset in ``text`` where the value of output field ``field_name`` starts (JSON
    ``"score": "2"`` or DSPy's chat format ``[[ ## score ## ]]\\n2``)."""
    name = re.escape(field_name)
    for pattern in (rf'"{name}"\s*:\s*"?', rf"\[\[\s*##\s*{name}\s*##\s*\]\]\s*"):
        m = re.search(pattern, text)
        if m:
            return m.end()
    return None


def _split_level(piece: str) -> tuple[str, bool]:
    """A token's text as level characters and whether a terminator follows them."""
    for i, ch in enumerate(piece):
        if ch in _TERMINATORS:
            return piece[:i], True
    return piece, False


def probabilities_from_logprobs(logprobs: Any, labels: Sequence[str], *, sampled: str | None,
                                field_name: str = "score") -> dict[str, float] | None:
    """The level probabilities read from an answer's token log probabilities, or ``None``.

    Parameters
    ----------
    logprobs
        DSPy's ``Prediction.logprobs`` (OpenAI's shape) for the whole answer.
    labels
        The dimension's level labels (:func:`level_labels`).
    sampled
        The level the LM wrote; locates the score when the tokens do not spell the answer.
    field_name
        The output field holding the score.

    The score position is the token where the field's value starts in the text the tokens
    spell; failing that (an engine that reports the score position only), the first token
    that starts the sampled level. There every alternative that begins a level counts:

    * a whole level (followed by a terminator, or a level no other level extends) gets the
      alternative's probability;
    * on the sampled path, a partial level (``"1"`` of ``"10"``, ``"N"`` of ``"N/A"``)
      continues with the next position's alternatives (the chain rule);
    * off the sampled path the continuation was not observed: a partial that is itself a
      level keeps the mass (``"1"`` when ``"10"`` exists), otherwise it is shared equally by
      the levels it begins (all of it when only one does, as ``"N"`` for ``"N/A"``).

    The mass is renormalised over the levels (a constrained decoder writes nothing else).
    """
    content = _content(logprobs)
    if not content or not labels:
        return None
    tokens = [_get(e, "token") if isinstance(_get(e, "token"), str) else "" for e in content]
    start = _value_start("".join(tokens), field_name)
    position, skip = None, ""
    if start is not None:
        offset = 0
        for i, tok in enumerate(tokens):
            if offset <= start < offset + len(tok):
                position, skip = i, tok[: start - offset]
                break
            offset += len(tok)
    if position is None and sampled:
        for i, tok in enumerate(tokens):
            core = tok.lstrip(" \t\n\"'")
            if core and sampled.startswith(_split_level(core)[0]) and _split_level(core)[0]:
                position, skip = i, tok[: len(tok) - len(core)]
                break
    if position is None:
        return None
    mass: dict[str, float] = {}
    _walk(content, position, "", 1.0, labels, mass, skip=skip)
    return _normalised(mass, labels)


def _walk(content: list[Any], i: int, sofar: str, weight: float, labels: Sequence[str],
          mass: dict[str, float], *, skip: str = "") -> None:
    entry = content[i]
    chosen = _get(entry, "token")
    for token, lp in _alternatives(entry).items():
        piece = token
        if skip:
            if not piece.startswith(skip):
                continue  # this alternative differs before the value starts
            piece = piece[len(skip):]
        core, ended = _split_level(piece)
        text = sofar + core
        if not core and not ended:
            continue
        p = weight * math.exp(lp)
        whole = text in labels
        longer = [lab for lab in labels if lab.startswith(text) and lab != text]
        if not whole and not longer:
            continue
        if ended or not longer:
            if whole:
                mass[text] = mass.get(text, 0.0) + p
        elif token == chosen and i + 1 < len(content):
            _walk(content, i + 1, text, p, labels, mass)  # observed: the chain rule
        elif whole:
            mass[text] = mass.get(text, 0.0) + p
        else:
            for lab in longer:
                mass[lab] = mass.get(lab, 0.0) + p / len(longer)


def judgment_probabilities(logprobs: Any, labels: Sequence[str], sampled: str,
                           field_name: str = "score") -> tuple[dict[str, float], str]:
    """``(probabilities, source)`` of one judgment: read from ``logprobs`` when they cover the
    score (source ``"logprobs"``), else one-hot on the sampled level (``"sampled"``)."""
    probs = probabilities_from_logprobs(logprobs, labels, sampled=sampled,
                                        field_name=field_name)
    if probs is not None:
        return probs, "logprobs"
    return one_hot(sampled, labels), "sampled"


def neighbour_distribution(scores: Sequence[int | None], similarities: Sequence[float],
                           labels: Sequence[str]) -> dict[str, float]:
    """The retrieved episodes' labels weighted by their similarity to the item (floored at 0;
    equal weights when none is positive); all zeros when nothing was retrieved or no label is
    a level of ``labels``."""
    mass: dict[str, float] = dict.fromkeys(labels, 0.0)
    weights = [max(float(s), 0.0) for s in similarities]
    if sum(weights) <= 0.0:
        weights = [1.0] * len(scores)
    total = 0.0
    for score, w in zip(scores, weights, strict=True):
        lab = label_of(score)
        if lab in mass:
            mass[lab] += w
            total += w
    return {lab: (m / total if total > 0.0 else 0.0) for lab, m in mass.items()}


# --- calibration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One training item's features and human label (what a calibration is fitted on).

    ``probabilities`` and ``neighbours`` follow the calibration's ``labels``; ``retrieved``
    are the item ids whose episodes the judgment saw; ``group`` identifies identical inputs.
    """

    item_id: str
    label: str
    probabilities: tuple[float, ...]
    neighbours: tuple[float, ...]
    retrieved: tuple[str, ...] = ()
    group: str = ""
    source: str = "sampled"

    def features(self) -> np.ndarray:
        return np.asarray(self.probabilities + self.neighbours, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "label": self.label,
                "probabilities": list(self.probabilities), "neighbours": list(self.neighbours),
                "retrieved": list(self.retrieved), "group": self.group, "source": self.source}


@dataclass(frozen=True)
class Calibration:
    """One dimension's calibration (see the module docstring). Build it with :meth:`fit`.

    ``kind`` is ``logistic``, ``prior``, ``identity`` or ``none`` (not fitted; ``reason`` says
    why). ``coef``/``intercept`` are the logistic model's (scikit-learn's layout: one row per
    class, or one row for two classes), over the features ``probabilities + neighbours``;
    ``classes`` the labels it saw; ``prior`` the training labels' distribution over
    ``labels``; ``cv_mae`` each candidate's cross-validated mean charged error and ``cv_se``
    the standard errors of the paired differences the choice compared (``identity`` and
    ``logistic`` against ``prior``, ``logistic-identity``);
    ``judge_calls``/``failed`` the judge calls spent on training features and how many of
    them failed (those items have no row).
    """

    kind: str
    reason: str
    labels: tuple[str, ...]
    scale: tuple[int, ...]
    k: int = 0
    C: float = DEFAULT_C
    classes: tuple[str, ...] = ()
    coef: tuple[tuple[float, ...], ...] = ()
    intercept: tuple[float, ...] = ()
    prior: tuple[float, ...] = ()
    cv_mae: dict[str, float] = field(default_factory=dict)
    cv_se: dict[str, float] = field(default_factory=dict)
    cv_folds: int = 0
    judge_calls: int = 0
    failed: int = 0
    rows: tuple[Row, ...] = ()

    @property
    def fitted(self) -> bool:
        return self.kind != "none"

    # --- prediction ---------------------------------------------------------------------

    def distribution(self, probabilities: Mapping[str, float],
                     neighbours: Mapping[str, float] | None = None) -> dict[str, float]:
        """The calibrated level distribution of one judgment (``labels`` order)."""
        if self.kind == "prior":
            return dict(zip(self.labels, self.prior, strict=True))
        if self.kind == "logistic":
            x = np.asarray([float(probabilities.get(lab, 0.0)) for lab in self.labels]
                           + [float((neighbours or {}).get(lab, 0.0)) for lab in self.labels])
            probs = _predict_proba(np.asarray(self.coef), np.asarray(self.intercept), x[None, :])
            out = dict.fromkeys(self.labels, 0.0)
            for lab, p in zip(self.classes, probs[0], strict=True):
                out[lab] = float(p)
            return out
        return {lab: float(probabilities.get(lab, 0.0)) for lab in self.labels}

    def point(self, dist: Mapping[str, float]) -> str:
        """The calibrated score (a label) of a calibrated distribution."""
        if self.kind == "identity":
            return expected_label(dist, self.scale)
        return bayes_label(dist, self.scale)

    # --- fitting ------------------------------------------------------------------------

    @classmethod
    def fit(cls, rows: Sequence[Row], labels: Sequence[str], scale: Sequence[int], *,
            k: int = 0, C: float = DEFAULT_C, judge_calls: int = 0, failed: int = 0,
            min_labels: int = MIN_LABELS) -> Calibration:
        """Fit on ``rows`` (see the module docstring for the candidates and the choice)."""
        labels, scale = tuple(labels), tuple(scale)
        rows = tuple(sorted(rows, key=lambda r: r.item_id))
        base = cls("none", "", labels, scale, k=k, C=C, judge_calls=judge_calls,
                   failed=failed, rows=rows)
        groups = sorted({r.group for r in rows})
        if len(rows) < min_labels or len(groups) < 2:
            return replace(base, reason=f"{len(rows)} judged training item(s) in "
                                        f"{len(groups)} group(s); calibration needs at least "
                                        f"{min_labels} items in 2 groups: scoring as expected")
        prior = _prior(rows, labels)
        cv, se, folds = _cross_validate(rows, labels, scale, C)
        kind = _choose(cv, se)
        summary = ", ".join(f"{name} {v:.3f}" for name, v in cv.items())
        fitted = replace(base, kind=kind, prior=tuple(prior), cv_mae=cv, cv_se=se,
                         cv_folds=folds)
        evidence = (f"on {folds}-fold CV of the training labels (MAE {summary}; a candidate "
                    f"must beat the simpler one by more than {SE_MARGIN:g} standard errors)")
        if kind == "logistic":
            X = np.stack([r.features() for r in rows])
            y = [r.label for r in rows]
            coef, intercept, classes = _fit_logistic(X, y, labels, C)
            return replace(fitted, classes=tuple(classes),
                           coef=tuple(tuple(float(v) for v in row) for row in coef),
                           intercept=tuple(float(v) for v in intercept),
                           reason=f"logistic regression beat the simpler candidates {evidence}")
        why = ("logistic regression needs two label levels" if "logistic" not in cv
               else "logistic regression was no better")
        what = ("the judge's own expected score, which beat the prior" if kind == "identity"
                else "the training labels' distribution (the prior)")
        return replace(fitted, reason=f"{why} {evidence}: using {what}")

    def forget(self, item_ids: Iterable[str]) -> Calibration | None:
        """A calibration without any trace of ``item_ids``: refitted from the rows that neither
        are nor retrieved one of them; ``None`` when none is left to fit on."""
        gone = set(item_ids)
        kept = [r for r in self.rows if r.item_id not in gone and not gone & set(r.retrieved)]
        if len(kept) == len(self.rows):
            return self
        if not kept:
            return None
        refit = Calibration.fit(kept, self.labels, self.scale, k=self.k, C=self.C,
                                judge_calls=self.judge_calls, failed=self.failed)
        return replace(refit, reason=f"refitted after forgetting {len(self.rows) - len(kept)} "
                                     f"row(s): {refit.reason}")

    def summary(self) -> dict[str, Any]:
        """What reports show: kind, reason, cross-validated errors, counts (no rows)."""
        return {"kind": self.kind, "reason": self.reason, "rows": len(self.rows),
                "cv_mae": {k: round(v, 4) for k, v in self.cv_mae.items()},
                "cv_se": {k: round(v, 4) for k, v in self.cv_se.items()},
                "cv_folds": self.cv_folds, "judge_calls": self.judge_calls,
                "failed": self.failed}

    # --- state --------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain JSON numbers and strings (``judgealign.state.CalibrationState``)."""
        return {"kind": self.kind, "reason": self.reason, "labels": list(self.labels),
                "k": self.k, "C": self.C, "classes": list(self.classes),
                "coef": [list(row) for row in self.coef], "intercept": list(self.intercept),
                "prior": list(self.prior), "cv_mae": dict(self.cv_mae),
                "cv_se": dict(self.cv_se),
                "cv_folds": self.cv_folds, "judge_calls": self.judge_calls,
                "failed": self.failed, "rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_state(cls, data: Any, labels: Sequence[str], scale: Sequence[int], *,
                   where: str = "calibration") -> Calibration:
        """A verified calibration from its state (a validated ``CalibrationState`` or its
        dict); ``ValueError`` naming the field when anything does not add up."""
        d = data.model_dump() if hasattr(data, "model_dump") else dict(data)
        labels, scale = tuple(labels), tuple(scale)
        if tuple(d["labels"]) != labels:
            raise ValueError(f"{where}.labels: {d['labels']} are not the dimension's levels "
                             f"{list(labels)}")
        m = len(labels)
        rows = []
        seen: set[str] = set()
        for n, r in enumerate(d.get("rows") or []):
            at = f"{where}.rows.{n}"
            if r["item_id"] in seen:
                raise ValueError(f"{at}.item_id: {r['item_id']!r} appears twice")
            seen.add(r["item_id"])
            if r["label"] not in labels:
                raise ValueError(f"{at}.label: {r['label']!r} is not a level of {list(labels)}")
            for name in ("probabilities", "neighbours"):
                values = r[name]
                if len(values) != m or any(not 0.0 <= v <= 1.0 for v in values):
                    raise ValueError(f"{at}.{name}: expected {m} numbers in [0, 1]")
                total = sum(values)
                if not (abs(total - 1.0) <= 1e-6 or (name == "neighbours" and total == 0.0)):
                    raise ValueError(f"{at}.{name}: they sum to {total:.6g}, not 1")
            rows.append(Row(r["item_id"], r["label"], tuple(r["probabilities"]),
                            tuple(r["neighbours"]), tuple(r.get("retrieved") or ()),
                            r.get("group") or "", r.get("source") or "sampled"))
        cal = cls(d["kind"], d["reason"], labels, scale, k=d["k"], C=d["C"],
                  classes=tuple(d.get("classes") or ()),
                  coef=tuple(tuple(row) for row in d.get("coef") or ()),
                  intercept=tuple(d.get("intercept") or ()), prior=tuple(d.get("prior") or ()),
                  cv_mae=dict(d.get("cv_mae") or {}), cv_se=dict(d.get("cv_se") or {}),
                  cv_folds=d.get("cv_folds") or 0,
                  judge_calls=d.get("judge_calls") or 0, failed=d.get("failed") or 0,
                  rows=tuple(sorted(rows, key=lambda r: r.item_id)))
        cal._verify(where)
        return cal

    def _verify(self, where: str) -> None:
        m = len(self.labels)
        if self.kind == "none":
            return
        if len(self.prior) != m:
            raise ValueError(f"{where}.prior: expected {m} numbers")
        expected_prior = _prior(self.rows, self.labels)
        if not self.rows or not np.allclose(self.prior, expected_prior, atol=1e-9):
            raise ValueError(f"{where}.prior: does not match the labels of its rows")
        if not {"prior", "identity"} <= set(self.cv_mae) or "identity" not in self.cv_se:
            raise ValueError(f"{where}.cv_mae: needs the errors of 'prior' and 'identity' "
                             "(and cv_se their standard error)")
        if "logistic" in self.cv_mae and not {"logistic", "logistic-identity"} <= set(
                self.cv_se):
            raise ValueError(f"{where}.cv_se: needs the standard errors of 'logistic'")
        chosen = _choose(self.cv_mae, self.cv_se)
        if chosen != self.kind:
            raise ValueError(f"{where}.kind: {self.kind!r}, but its cross-validated errors "
                             f"choose {chosen!r}")
        if self.kind != "logistic":
            if self.coef or self.intercept or self.classes:
                raise ValueError(f"{where}.coef: a {self.kind!r} calibration has no "
                                 "coefficients")
            return
        classes = list(self.classes)
        if (len(classes) < 2 or len(set(classes)) != len(classes)
                or any(c not in self.labels for c in classes)
                or classes != sorted(classes, key=self.labels.index)
                or set(classes) != {r.label for r in self.rows}):
            raise ValueError(f"{where}.classes: must be the labels of its rows, in level order")
        rows_needed = 1 if len(classes) == 2 else len(classes)
        coef = np.asarray(self.coef, dtype=np.float64)
        if coef.shape != (rows_needed, 2 * m) or len(self.intercept) != rows_needed:
            raise ValueError(f"{where}.coef: expected {rows_needed} row(s) of {2 * m} "
                             "coefficients and as many intercepts")
        X = np.stack([r.features() for r in self.rows])
        grad = _gradient(coef, np.asarray(self.intercept), X, [r.label for r in self.rows],
                         classes, self.C)
        if not np.isfinite(grad).all() or float(np.abs(grad).max()) > _GRADIENT_TOL:
            raise ValueError(f"{where}.coef: the coefficients are not the fit of its rows "
                             "(edited numbers?)")


# --- the numbers behind fitting -------------------------------------------------------------


def _prior(rows: Sequence[Row], labels: Sequence[str]) -> list[float]:
    counts = [sum(1 for r in rows if r.label == lab) for lab in labels]
    total = sum(counts)
    return [c / total for c in counts] if total else [0.0] * len(labels)


def _group_folds(rows: Sequence[Row], folds: int) -> list[int]:
    """Fold of each row: groups in the order of a hash of their key, dealt round-robin
    (deterministic, independent of item order)."""
    order = sorted({r.group for r in rows},
                   key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
    fold_of = {g: i % folds for i, g in enumerate(order)}
    return [fold_of[r.group] for r in rows]


def _beats(cv: Mapping[str, float], se: Mapping[str, float], better: str, simpler: str,
           key: str) -> bool:
    """``better``'s mean CV error is lower than ``simpler``'s by more than ``SE_MARGIN``
    standard errors of their paired difference (``se[key]``)."""
    return cv[better] < cv[simpler] - SE_MARGIN * se[key] - 1e-9


def _choose(cv: Mapping[str, float], se: Mapping[str, float]) -> str:
    """The simplest candidate no other beats by ``SE_MARGIN`` standard errors (module
    docstring)."""
    kind = "identity" if _beats(cv, se, "identity", "prior", "identity") else "prior"
    if "logistic" in cv:
        key = "logistic" if kind == "prior" else "logistic-identity"
        if _beats(cv, se, "logistic", kind, key):
            kind = "logistic"
    return kind


def _se(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of the mean of the paired differences ``a - b``."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0


def _cross_validate(rows: Sequence[Row], labels: Sequence[str], scale: Sequence[int],
                    C: float) -> tuple[dict[str, float], dict[str, float], int]:
    """Each candidate's mean charged error on a grouped K-fold CV of ``rows``, the standard
    errors of the paired differences the choice compares, and the number of folds."""
    lo, hi = min(scale), max(scale)
    k = min(CV_FOLDS, len({r.group for r in rows}))
    fold = _group_folds(rows, k)
    X = np.stack([r.features() for r in rows])
    two_levels = len({r.label for r in rows}) >= 2
    names = ["prior", "identity", *(["logistic"] if two_levels else [])]
    errors: dict[str, list[float]] = {name: [0.0] * len(rows) for name in names}
    for f in range(k):
        train = [i for i in range(len(rows)) if fold[i] != f]
        test = [i for i in range(len(rows)) if fold[i] == f]
        prior = dict(zip(labels, _prior([rows[i] for i in train], labels), strict=True))
        prior_point = bayes_label(prior, scale)
        ys = [rows[i].label for i in train]
        if two_levels:
            if len(set(ys)) >= 2:
                coef, intercept, classes = _fit_logistic(X[train], ys, labels, C)
                proba = _predict_proba(coef, intercept, X[test])
            else:  # this fold's training part has one level: the model is that level
                classes, proba = [ys[0]], np.ones((len(test), 1))
        for n, i in enumerate(test):
            r = rows[i]
            errors["prior"][i] = charge(r.label, prior_point, lo, hi)
            own = dict(zip(labels, r.probabilities, strict=True))
            errors["identity"][i] = charge(r.label, expected_label(own, scale), lo, hi)
            if two_levels:
                dist = dict.fromkeys(labels, 0.0)
                dist.update({c: float(p) for c, p in zip(classes, proba[n], strict=True)})
                errors["logistic"][i] = charge(r.label, bayes_label(dist, scale), lo, hi)
    se = {"identity": _se(errors["identity"], errors["prior"])}
    if two_levels:
        se["logistic"] = _se(errors["logistic"], errors["prior"])
        se["logistic-identity"] = _se(errors["logistic"], errors["identity"])
    return {name: sum(v) / len(rows) for name, v in errors.items()}, se, k


def _fit_logistic(X: np.ndarray, y: Sequence[str], labels: Sequence[str], C: float
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's L2 logistic regression (multinomial for 3+ classes); returns
    ``coef`` (classes x features, one row for two classes), ``intercept`` and the classes in
    level order."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = [lab for lab in labels if lab in set(y)]
    target = np.asarray([classes.index(v) for v in y])
    model = LogisticRegression(C=C, tol=_FIT_TOL, max_iter=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, target)
    return model.coef_.astype(np.float64), model.intercept_.astype(np.float64), classes


def _predict_proba(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Class probabilities (rows x classes) of stored logistic coefficients."""
    z = X @ coef.T + intercept  # (rows, 1) for two classes, else (rows, classes)
    if coef.shape[0] == 1:
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _gradient(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, y: Sequence[str],
              classes: Sequence[str], C: float) -> np.ndarray:
    """Gradient of scikit-learn's objective ``sum(log-loss) + ||coef||^2 / (2 C)``, divided by
    the number of rows, at ``coef``/``intercept`` (all coefficients and intercepts, flat)."""
    n = len(y)
    proba = _predict_proba(coef, intercept, X)
    onehot = np.zeros_like(proba)
    for i, lab in enumerate(y):
        onehot[i, list(classes).index(lab)] = 1.0
    if coef.shape[0] == 1:
        resid = (proba[:, 1] - onehot[:, 1])[:, None]  # (rows, 1)
    else:
        resid = proba - onehot
    g_coef = resid.T @ X / n + coef / (C * n)
    g_int = resid.sum(axis=0) / n
    return np.concatenate([g_coef.ravel(), g_int])


# --- applying a policy ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a policy made of one judgment: the score label, the policy that produced it and,
    for ``calibrated``, the calibrated distribution."""

    label: str
    policy: str
    calibrated: dict[str, float] | None = None


def apply_policy(policy: str, probabilities: Mapping[str, float], sampled: str,
                 scale: Sequence[int], calibration: Calibration | None = None,
                 neighbours: Mapping[str, float] | None = None) -> Verdict:
    """The score of a judgment under ``policy`` (see the module docstring). ``calibrated``
    without a fitted calibration scores as ``expected`` and says so in ``policy``."""
    if policy == "sampled":
        return Verdict(sampled, "sampled")
    if policy == "calibrated" and calibration is not None and calibration.fitted:
        dist = calibration.distribution(probabilities, neighbours)
        return Verdict(calibration.point(dist), "calibrated", dist)
    if policy not in POLICIES:
        raise ValueError(f"unknown score policy {policy!r}; known: {', '.join(POLICIES)}")
    return Verdict(expected_label(probabilities, scale), "expected")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown score policy {policy!r}; known: {', '.join(POLICIES)}")
    return policy


# --- training features ----------------------------------------------------------------------


def input_group(inputs: Mapping[str, str]) -> str:
    """A key shared by items with identical inputs (a hash of the text they are embedded by)."""
    from judgealign.memory.records import item_text

    return hashlib.sha256(item_text(inputs).encode("utf-8")).hexdigest()[:16]


def calibration_sample(item_ids: Iterable[str], most: int | None, seed: int = 0) -> list[str]:
    """The training items a calibration judges, sorted: all of them, or (``most``) the
    ``most`` whose seeded hash of the id ranks lowest. A hash rather than a random draw, so
    that dimensions with different but overlapping item sets share most of their items (a
    joint judge judges each of them once for all dimensions), and the choice does not
    depend on which other items are present."""
    ids = sorted(set(item_ids))
    if most is None or len(ids) <= most:
        return ids

    def rank(item_id: str) -> str:
        return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()

    return sorted(sorted(ids, key=rank)[:most])


def training_rows(djudge: Any, episodes: Sequence[Any],
                  run: Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]
                  ) -> tuple[list[Row], int]:
    """Judge every training episode with itself and every episode with identical inputs left
    out of retrieval; returns the feature rows and how many judgments failed.

    ``djudge`` is a ``DimensionJudge`` (called with ``_exclude=`` and ``_collect=True``);
    ``episodes`` the dimension's training episodes; ``run(fn, jobs)`` maps ``fn`` over the
    jobs (in order; threads allowed).
    """
    names = djudge.rubric.input_names
    labels = level_labels(djudge.rubric.scale, djudge.spec.allows_na)
    groups: dict[str, set[str]] = {}
    keyed = []
    for e in episodes:
        inputs = {name: e.inputs.get(name, "") for name in names}
        key = input_group(inputs)
        groups.setdefault(key, set()).add(e.item_id)
        keyed.append((e, inputs, key))

    def judge(job: tuple[Any, dict[str, str], str]) -> Any:
        e, inputs, key = job
        return djudge(_exclude=frozenset(groups[key] | {e.item_id}), _collect=True, **inputs)

    results = run(judge, keyed)
    rows, failed = [], 0
    for (e, _, key), result in zip(keyed, results, strict=True):
        if result.failed or not result.probabilities:
            failed += 1
            continue
        rows.append(Row(e.item_id, label_of(e.score),
                        tuple(float(result.probabilities.get(lab, 0.0)) for lab in labels),
                        tuple(float(result.neighbours.get(lab, 0.0)) for lab in labels),
                        tuple(result.retrieved_ids), key,
                        result.probabilities_source or "sampled"))
    return rows, failed


__all__ = ["DEFAULT_POLICY", "KINDS", "MIN_LABELS", "POLICIES", "SOURCES", "Calibration",
           "Row", "Verdict", "apply_policy", "bayes_label", "calibration_sample", "charge",
           "check_policy",
           "expected_label", "input_group", "judgment_probabilities", "level_labels",
           "logprob_request", "neighbour_distribution", "one_hot",
           "probabilities_from_logprobs", "training_rows"]
