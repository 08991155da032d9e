"""The schema of a judge's state: what ``RubricJudge.dump_state()`` returns and
``load_state()`` accepts, checked field by field before anything of it is used.

A saved judge's ``program.json`` is this state; every value is validated here (types, ranges,
no unknown keys), so a tampered or corrupted file is refused with the field that is wrong,
never half-applied.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATE_FORMAT = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_M = TypeVar("_M", bound=_Strict)


class PredictorState(_Strict):
    """A DSPy predictor's own state: its signature and any demos an optimizer stored."""

    signature: dict[str, Any]
    demos: list[dict[str, Any]] = Field(default_factory=list)


# --- calibration (issue 13; see judgealign.calibration) ---
# Finite numbers only: JSON readers accept NaN and Infinity, a calibration must not.
Number = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class CalibrationRowState(_Strict):
    """One training item's features (level probabilities, neighbours' label distribution)."""

    item_id: str = Field(min_length=1)
    label: str = Field(min_length=1)
    probabilities: list[Probability]
    neighbours: list[Probability]
    retrieved: list[str] = Field(default_factory=list)
    group: str = ""
    source: Literal["logprobs", "sampled"] = "sampled"


class CalibrationState(_Strict):
    """A dimension's calibration as plain numbers; its consistency (prior, choice, the
    logistic coefficients against the rows) is verified by ``Calibration.from_state``."""

    kind: Literal["logistic", "prior", "identity", "none"]
    reason: str = ""
    labels: list[str] = Field(min_length=2)
    k: int = Field(default=0, ge=0, le=1000)
    C: Number = Field(default=1.0, gt=0.0)
    classes: list[str] = Field(default_factory=list)
    coef: list[list[Number]] = Field(default_factory=list)
    intercept: list[Number] = Field(default_factory=list)
    prior: list[Probability] = Field(default_factory=list)
    cv_mae: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] = Field(
        default_factory=dict)
    cv_se: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] = Field(
        default_factory=dict)
    cv_folds: int = Field(default=0, ge=0)
    judge_calls: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    rows: list[CalibrationRowState] = Field(default_factory=list)


class DimensionState(_Strict):
    """One dimension: its options, its semantic memory (kept and rejected guidelines), its
    score policy (``None`` in states written before policies existed: ``sampled``) and its
    calibration."""

    k: int = Field(ge=0, le=1000)
    demo_input_tokens: int = Field(ge=32, le=1_000_000)
    item_tokens: int | None = Field(default=None, ge=64, le=10_000_000)
    guidelines: list[dict[str, Any]] = Field(default_factory=list)
    rejected: list[dict[str, Any]] = Field(default_factory=list)
    predictor: PredictorState
    policy: Literal["sampled", "expected", "calibrated"] | None = None
    calibration: CalibrationState | None = None
    extra: dict[str, Any] = Field(default_factory=dict)  # reserved for later additions


class EpisodeState(_Strict):
    """One stored example of episodic memory."""

    item_id: str = Field(min_length=1)
    dimension: str = Field(min_length=1)
    inputs: dict[str, str]
    score: int | None
    rationale: str = ""


class EpisodicState(_Strict):
    """The episodic memory: the embedder it was indexed with, and its records."""

    embedder: dict[str, Any]
    episodes: list[EpisodeState] = Field(default_factory=list)
    count: int | None = Field(default=None, ge=0)  # records stored beside the state instead


class JudgeState(_Strict):
    """All of a judge's state."""

    format: int
    rubric: dict[str, Any]
    dimensions: dict[str, DimensionState]
    # The judging mode (None in states written before joint mode: per-dimension).
    mode: Literal["per-dimension", "joint"] | None = None
    seen: dict[str, str] = Field(default_factory=dict)
    episodic: EpisodicState | None = None
    report: dict[str, Any] | None = None


def validate_state(data: Any, *, where: str = "judge state") -> JudgeState:
    """``data`` as a :class:`JudgeState`, or ``ValueError`` naming the first bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    if data.get("format") != STATE_FORMAT:
        raise ValueError(f"{where}: state format {data.get('format')!r}; this judgealign "
                         f"reads format {STATE_FORMAT}")
    return _validated(JudgeState, data, where)


def validate_episode(data: Any, *, where: str) -> EpisodeState:
    """One row of ``episodes.jsonl`` as an :class:`EpisodeState` (``ValueError`` if not)."""
    return _validated(EpisodeState, data, where)


def _validated(model: type[_M], data: Any, where: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ValueError(f"{where}: field {field}: {err['msg']}") from None


__all__ = ["STATE_FORMAT", "CalibrationRowState", "CalibrationState", "DimensionState",
           "EpisodeState", "EpisodicState", "JudgeState", "PredictorState", "validate_episode",
           "validate_state"]
