"""The plain record of one labelled example (no numpy, no Chroma, no settings).

Labels produce episodes; the episodic memory stores them; the grounding filter and the
optimizers read them. Keeping the record here lets :mod:`judgealign.labels` stay a light,
dependency-free module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Episode:
    """One labelled example of one dimension: the item, the expert score (None: N/A), why."""

    item_id: str
    dimension: str
    inputs: dict[str, str] = field(hash=False)
    score: int | None
    rationale: str = ""

    @property
    def id(self) -> str:
        return f"{self.item_id}::{self.dimension}"

    @property
    def content_hash(self) -> str:
        blob = json.dumps([self.inputs, self.score, self.rationale], sort_keys=True,
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Episode:
        return cls(item_id=str(data["item_id"]), dimension=str(data["dimension"]),
                   inputs={str(k): str(v) for k, v in dict(data["inputs"]).items()},
                   score=data.get("score"), rationale=str(data.get("rationale") or ""))


def item_text(inputs: Mapping[str, str]) -> str:
    """The text an item is embedded by: its fields in name order."""
    return "\n\n".join(f"{name}:\n{inputs[name]}" for name in sorted(inputs) if inputs[name])


__all__ = ["Episode", "item_text"]
