"""Semantic memory: guidelines distilled from expert feedback, each with its provenance.

A guideline is kept (it steers the judge) or rejected (kept only for transparency, with the
reason). Its ``sources`` are the item ids of the labelled examples it was distilled from, so
that forgetting those items (``unalign``) can remove it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

Reason = Literal["ungrounded", "duplicate", "restates_rubric", "no_sources", "over_cap",
                 "failed_validation", "empty", "too_long", "too_short"]
# How a guideline was made: ``cited`` (a reflection LM read a batch of examples and cited the
# ones it drew on), ``per-example`` (a reflection LM read one example or one contrasting pair;
# its sources are that example or pair), ``extractive`` (no LM: the most central sentence of a
# cluster of expert rationales).
Mode = Literal["cited", "per-example", "extractive"]
MODES: tuple[Mode, ...] = ("cited", "per-example", "extractive")
GUIDELINES_HEADING = "Guidelines learned from expert reviewers (apply them):"
MAX_GUIDELINE_CHARS = 300  # longer guidelines are rejected as too_long: they bloat every prompt


@dataclass(frozen=True)
class Guideline:
    """One short, checkable rule for one dimension.

    ``support`` counts the distinct examples behind it (grows when duplicates merge);
    ``grounding`` is the similarity score the grounding filter measured (None if not checked).
    ``mode`` says how it was made (see :data:`Mode`; data saved before modes existed loads as
    ``cited``). ``scores`` is the expert score the examples of an extractive guideline got
    (``"1"``, ``"N/A"``: extractive clusters never mix score levels, see
    :mod:`judgealign.memory.extractive`); it is rendered after the text, "(experts scored 1)",
    so the judge knows which way the remark points; ``None`` for LM-written guidelines, which
    say so in their own words. ``validation`` is the mean error against the expert labels on
    held-out training examples, ``(without, with)`` the guideline (``None``: not validated).
    """

    text: str
    dimension: str
    sources: tuple[str, ...]
    support: int = 1
    grounding: float | None = None
    reason: Reason | None = None  # set on rejected guidelines only
    mode: Mode = "cited"
    scores: str | None = None
    validation: tuple[float, float] | None = None

    @property
    def rendered(self) -> str:
        """The line the judge reads: the text, and the experts' scores when known."""
        return f"{self.text} (experts scored {self.scores})" if self.scores else self.text

    @property
    def id(self) -> str:
        digest = hashlib.sha256(f"{self.dimension}\n{self.text}".encode()).hexdigest()
        return "g-" + digest[:12]

    def with_sources(self, sources: Sequence[str]) -> Guideline:
        return replace(self, sources=tuple(sources), support=len(set(sources)))

    def rejected(self, reason: Reason) -> Guideline:
        return replace(self, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        data["validation"] = list(self.validation) if self.validation is not None else None
        data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Guideline:
        """Inverse of :meth:`to_dict`; fields missing from older data take their defaults."""
        fields = {k: v for k, v in data.items() if k != "id"}
        fields["sources"] = tuple(fields.get("sources", ()))
        if fields.get("validation") is not None:
            without, with_it = fields["validation"]
            fields["validation"] = (float(without), float(with_it))
        return cls(**fields)


def guideline_lines(guidelines: Sequence[Guideline]) -> str:
    """One ``- <guideline>`` line per guideline ('' when there is none)."""
    return "\n".join(f"- {g.rendered}" for g in guidelines)


def render_guidelines(guidelines: Sequence[Guideline]) -> str:
    """The block appended to a dimension's instructions ('' when there is none)."""
    if not guidelines:
        return ""
    return f"{GUIDELINES_HEADING}\n{guideline_lines(guidelines)}"


def merge_duplicates(kept: Sequence[Guideline], new: Sequence[Guideline], vectors_kept: np.ndarray,
                     vectors_new: np.ndarray, threshold: float
                     ) -> tuple[list[Guideline], list[Guideline]]:
    """Fold each new guideline into an existing near-duplicate (cosine >= threshold).

    Shapes: ``vectors_kept`` (len(kept), d), ``vectors_new`` (len(new), d), L2-normalised.
    The survivor keeps its text (and mode, scores, validation) and gains the duplicate's
    sources. Two extractive remarks attached to different score levels are never merged:
    the same words said of a 1 and of a 3 are a contrast, not a repeat. Returns the updated
    guidelines (old first, then genuinely new ones) and the duplicates, marked rejected.
    """
    pool = list(kept)
    pool_vecs = [v for v in vectors_kept]
    duplicates: list[Guideline] = []
    for g, vec in zip(new, vectors_new, strict=True):
        if pool_vecs:
            sims = np.stack(pool_vecs) @ vec
            for i, other in enumerate(pool):
                if other.scores and g.scores and other.scores != g.scores:
                    sims[i] = -np.inf
            best = int(np.argmax(sims))
            if float(sims[best]) >= threshold:
                target = pool[best]
                merged_sources = tuple(dict.fromkeys(target.sources + g.sources))
                pool[best] = target.with_sources(merged_sources)
                duplicates.append(g.rejected("duplicate"))
                continue
        pool.append(g)
        pool_vecs.append(vec)
    return pool, duplicates


def cap(guidelines: Sequence[Guideline], limit: int) -> tuple[list[Guideline], list[Guideline]]:
    """Keep the ``limit`` best-supported guidelines (ties: older first); reject the rest."""
    order = sorted(range(len(guidelines)), key=lambda i: (-guidelines[i].support, i))
    keep = set(order[:limit])
    kept = [g for i, g in enumerate(guidelines) if i in keep]
    dropped = [g.rejected("over_cap") for i, g in enumerate(guidelines) if i not in keep]
    return kept, dropped
