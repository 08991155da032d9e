"""What a judge returns: one ``DimensionResult`` per dimension, gathered in a ``JudgeResult``.

Kept apart from the judge program so that every way of judging (per dimension, joint) builds
the same results without importing the program.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from judgealign.signatures.rubric import format_score


@dataclass
class DimensionResult:
    """One dimension's verdict on one item.

    ``score`` is a level or ``None`` for N/A; when ``error`` is set the judge failed (after
    retries) and ``score`` is ``None`` too, with the LM's raw answer in ``raw``.

    Judgments are distributions (:mod:`judgealign.calibration`): ``probabilities`` maps every
    level label (``"1"`` ..., ``"N/A"`` where the dimension allows it) to a probability, summing
    to 1; ``probabilities_source`` is ``"logprobs"`` (read from the LM's log probabilities at
    the score position) or ``"sampled"`` (the LM gave none: all mass on the level it wrote).
    ``policy`` is the score policy that produced ``score`` (``sampled``, ``expected`` or
    ``calibrated``), ``sampled_score`` the level the LM wrote, ``calibrated`` the calibrated
    distribution (``calibrated`` policy only) and ``neighbours`` the similarity-weighted label
    distribution of the retrieved episodes, when the calibration uses it. A failed judgment
    has none of them.
    """

    dimension: str
    score: int | None
    rationale: str = ""
    retrieved_ids: list[str] = field(default_factory=list)
    error: str | None = None
    raw: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    probabilities_source: str | None = None
    policy: str | None = None
    sampled_score: int | None = None
    calibrated: dict[str, float] | None = None
    neighbours: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def label(self) -> str:
        return "FAILED" if self.failed else format_score(self.score)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class JudgeResult:
    """All dimensions' verdicts on one item, keyed by dimension id (in rubric order)."""

    item_id: str | None
    dimensions: dict[str, DimensionResult]

    def __getitem__(self, dimension: str) -> DimensionResult:
        return self.dimensions[dimension]

    def __iter__(self):
        return iter(self.dimensions.values())

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id,
                "dimensions": {k: v.to_dict() for k, v in self.dimensions.items()}}


__all__ = ["DimensionResult", "JudgeResult"]
