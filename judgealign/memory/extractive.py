"""Extractive guidelines: the experts' own sentences, chosen without any LM.

When no reflection LM can write a usable guideline (the embedded 135M model cannot cite the
examples it draws on), a dimension still gets semantic memory from what its experts wrote:

1. every rationale of the dimension is cut into units: its sentences (several raters'
   rationales, joined by ``" | "`` in an :class:`~judgealign.memory.records.Episode`, and
   lines are split first). A line in the span-annotation form ``"<quoted span>" -- <comment>``
   (how SQuALITY's reviewers commented) contributes its comment only: the quoted span is the
   item's words, not the expert's. A sentence longer than ``max_chars`` is cut at clause
   boundaries (``; ``, ``: ``, ``, ``) into verbatim fragments of at most ``max_chars``; units
   shorter than ``min_chars`` or of fewer than four words are dropped;
2. the units are grouped by the expert score of their example (N/A is a group of its own), so
   each guideline points one way: a remark experts made about 1s is not mixed with one about
   3s;
3. within a score level, the units are clustered with the project's embedder: Ward
   agglomerative clustering of the L2-normalised vectors (squared Euclidean distance between
   unit vectors is ``2 - 2 cos``, so this is cosine clustering), ``round(sqrt(n))`` clusters
   for ``n`` units. It is deterministic: no seed, no sampling;
4. each cluster's guideline is its most central unit (highest mean cosine to the cluster's
   other units; ties: the shorter, then the first), verbatim. Its ``sources`` are the
   cluster's distinct items, ``support`` their number, ``scores`` the level
   (e.g. ``"1"`` or ``"N/A"``) and ``mode`` is ``"extractive"``;
5. clusters with at least two distinct items are preferred; a level whose clusters all come
   from one item contributes its best single-item cluster. Levels take turns (the level with
   the most items first), each offering its clusters by number of items, then cohesion, so
   that ``limit`` guidelines cover the score levels instead of the majority level only.

The guidelines then go through the same grounding filter, de-duplication, cap and validation
as LM-written ones; since each is a sentence of its own evidence, grounding rarely rejects it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from judgealign.memory.embedders import Embedder
from judgealign.memory.records import Episode
from judgealign.memory.semantic import MAX_GUIDELINE_CHARS, Guideline

MIN_UNIT_CHARS = 30  # shorter remarks ("what?", "no comma") say too little to guide a judge
MAX_UNITS_PER_LEVEL = 2000  # Ward clustering is quadratic in memory: 2000 units ~ 32 MB
_RATER_SEPARATOR = " | "  # how LabelSet.episodes joins several raters' rationales
# A sentence ends at . ! or ? followed by space and a capital, digit, quote or bracket; "e.g. x"
# and "cells 3. 4" do not split because a lower-case word or nothing capitalised follows.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_CLAUSE_BREAKS = ("; ", ": ", ", ")
# '"<span>" / "<span>" -- <comment>' or '-- <comment>': the comment after the first closing
# quote followed by " -- " (spans may hold dashes of their own, but not that sequence).
_ANNOTATION = re.compile(r'^(?:.*?["\u201d])?\s*--\s+(?P<comment>.+)$')


@dataclass(frozen=True)
class _Unit:
    text: str
    item_id: str
    level: str  # the expert score as a label: "1", "3", "N/A"


def rationale_units(rationale: str, *, max_chars: int = MAX_GUIDELINE_CHARS,
                    min_chars: int = MIN_UNIT_CHARS) -> list[str]:
    """Verbatim sentences (or clause fragments of long sentences) of a rationale, in order.

    Every unit is a substring of ``rationale`` of ``min_chars`` to ``max_chars`` characters
    with at least four words; duplicates are dropped.
    """
    units: list[str] = []
    lines = [line.strip() for part in rationale.split(_RATER_SEPARATOR)
             for line in part.splitlines()]
    for line in lines:
        annotated = _ANNOTATION.match(line)
        if annotated:
            line = annotated.group("comment").strip()
        for sentence in _SENTENCE_END.split(line):
            sentence = sentence.strip()
            pieces = [sentence] if len(sentence) <= max_chars else _clauses(sentence, max_chars)
            units += [p for p in pieces
                      if len(p) >= min_chars and len(p.split()) >= 4 and p not in units]
    return units


def _clauses(sentence: str, max_chars: int) -> list[str]:
    """Cut a long sentence into verbatim fragments of at most ``max_chars``: at the first kind
    of clause boundary that yields fragments short enough, joining neighbours while they fit."""
    for sep in _CLAUSE_BREAKS:
        parts = sentence.split(sep)
        if len(parts) < 2:
            continue
        fragments: list[str] = []
        current = parts[0]
        for part in parts[1:]:
            if len(current) + len(sep) + len(part) <= max_chars:
                current = current + sep + part
            else:
                fragments.append(current)
                current = part
        fragments.append(current)
        fitting = [f.strip() for f in fragments if len(f.strip()) <= max_chars]
        if fitting:
            return fitting
    return []  # one unbroken run longer than max_chars: nothing verbatim fits


def _level(score: int | None) -> str:
    return "N/A" if score is None else str(score)


def extract_guidelines(episodes: Sequence[Episode], embedder: Embedder, *, limit: int,
                       max_chars: int = MAX_GUIDELINE_CHARS,
                       min_chars: int = MIN_UNIT_CHARS) -> list[Guideline]:
    """Up to ``limit`` extractive guidelines from the rationales of ``episodes`` (one dimension).

    Parameters
    ----------
    episodes
        Labelled examples of one dimension; those without a rationale contribute nothing.
    embedder
        Embeds the rationale units (``embed(texts) -> (len(texts), d)``, rows L2-normalised).
    limit
        Most guidelines returned (``<= 0``: none).
    max_chars, min_chars
        Length bounds of a unit; default :data:`MAX_GUIDELINE_CHARS` and ``MIN_UNIT_CHARS``.

    Returns guidelines with ``mode="extractive"``, ``scores`` set to the level, ordered as
    described in the module docstring; the same input gives the same output.
    """
    if limit <= 0 or not episodes:
        return []
    dimension = episodes[0].dimension
    by_level: dict[str, list[_Unit]] = {}
    items_per_level: dict[str, set[str]] = {}
    for ep in sorted(episodes, key=lambda e: e.item_id):
        level = _level(ep.score)
        for text in rationale_units(ep.rationale or "", max_chars=max_chars,
                                    min_chars=min_chars):
            by_level.setdefault(level, []).append(_Unit(text, ep.item_id, level))
            items_per_level.setdefault(level, set()).add(ep.item_id)
    order = sorted(by_level, key=lambda lv: (-len(items_per_level[lv]), lv))
    offers = [_level_clusters(by_level[lv], embedder) for lv in order]
    chosen: list[Guideline] = []
    seen_texts: set[str] = set()
    while len(chosen) < limit and any(offers):
        for offer in offers:
            if offer and len(chosen) < limit:
                text, items, level = offer.pop(0)
                if text in seen_texts:
                    continue
                seen_texts.add(text)
                chosen.append(Guideline(text, dimension, tuple(items), support=len(items),
                                        mode="extractive", scores=level))
    return chosen


def _level_clusters(units: list[_Unit], embedder: Embedder
                    ) -> list[tuple[str, list[str], str]]:
    """Clusters of one score level as ``(central text, item ids, level)``, best first."""
    if len(units) > MAX_UNITS_PER_LEVEL:  # an even, deterministic thinning of huge levels
        step = len(units) / MAX_UNITS_PER_LEVEL
        units = [units[int(i * step)] for i in range(MAX_UNITS_PER_LEVEL)]
    vectors = np.asarray(embedder.embed([u.text for u in units]), dtype=np.float64)
    labels = _cluster(vectors)
    ranked = []
    for label in sorted(set(labels.tolist())):
        members = [i for i in range(len(units)) if labels[i] == label]
        items = list(dict.fromkeys(units[i].item_id for i in members))
        sims = vectors[members] @ vectors[members].T
        # mean similarity to the *other* members: the diagonal (1.0) would favour nothing
        centrality = ((sims.sum(axis=1) - 1.0) / max(len(members) - 1, 1)
                      if len(members) > 1 else np.ones(1))
        best = min(range(len(members)),
                   key=lambda j: (-round(float(centrality[j]), 9), len(units[members[j]].text),
                                  members[j]))
        cohesion = float(centrality.mean())
        ranked.append((-len(items), -round(cohesion, 9), units[members[best]].text, items))
    ranked.sort()
    multi = [(text, items) for n, _, text, items in ranked if -n >= 2]
    picked = multi or [(text, items) for _, _, text, items in ranked[:1]]
    level = units[0].level
    return [(text, items, level) for text, items in picked]


def _cluster(vectors: np.ndarray) -> np.ndarray:
    """Cluster labels of L2-normalised rows: Ward linkage, ``round(sqrt(n))`` clusters."""
    n = len(vectors)
    k = max(1, min(n, round(math.sqrt(n))))
    if k == 1 or n < 2:
        return np.zeros(n, dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(vectors)


__all__ = ["MIN_UNIT_CHARS", "extract_guidelines", "rationale_units"]
