"""The grounding filter: a guideline steers the judge only if its cited examples support it.

No LM call is made. With the judge's own embedder, each proposed guideline gets

* ``support``: its highest cosine similarity to the evidence it cites: the cited examples'
  expert rationales (the feedback a guideline distils) when any of them has one, else an
  excerpt of each cited item. Not the items themselves when the experts wrote something: a
  fragment copied from an item's text (its title, a code line) is similar to that item, and
  it says nothing the experts said;
* ``null``: its highest similarity to text it should *not* resemble more than its evidence:
  the other dimensions' rubric text (a guideline about another dimension) and a fixed bank of
  off-topic sentences (health, food, travel ... the way an unrelated remark reads);
* ``restate``: its highest similarity to the lines of its own dimension's rubric.

It is kept when ``support >= min_support`` and ``support - null >= margin`` and
``restate < restate_threshold``. Otherwise it is rejected as ``no_sources`` (cites nothing
that exists), ``restates_rubric`` or ``ungrounded``. The defaults were chosen so that on the
hashing embedder an unrelated sentence scores far below its null while a rule phrased with the
evidence's own vocabulary passes; they are parameters because other embedders have other
similarity scales.

The filter is the same for every reflection mode (cited, per-example, extractive): only the
way ``sources`` were obtained differs. An extractive guideline is a sentence of its own
evidence, so it passes unless it restates the rubric or reads more like another dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from judgealign.memory.embedders import Embedder
from judgealign.memory.records import Episode, item_text
from judgealign.memory.semantic import Guideline
from judgealign.signatures.rubric import Rubric

# Sentences about nothing a rubric of work products judges; written for this project.
OFF_TOPIC = (
    "Lemonade is a refreshing drink that is good for your health.",
    "Drinking water and sleeping well keep the body and the spirit healthy.",
    "The weather this weekend will be sunny with a light breeze in the afternoon.",
    "Our team won the football match after a late goal in the second half.",
    "Add salt and pepper to the soup and let it simmer for twenty minutes.",
    "The hotel room had a beautiful view of the sea and the mountains.",
    "Remember to water the plants in the garden twice a week during summer.",
    "The stock market rose today as investors welcomed the news.",
    "She painted a portrait of her grandmother in bright colours.",
    "A good night's rest and a healthy breakfast start the day well.",
    "The train to the city leaves every hour from the main station.",
    "Music and dance bring people together at the summer festival.",
    "Always be kind, honest and respectful to everyone you meet.",
    "This is important and should be considered carefully in every case.",
    "Cats and dogs are popular pets that need care and attention.",
    "The recipe needs two eggs, a cup of flour and a spoon of sugar.",
)
_EXCERPT_CHARS = 1200


@dataclass(frozen=True)
class GroundingFilter:
    """Thresholds of the grounding filter (see the module docstring).

    min_support
        Minimum cosine similarity to the cited evidence. Default 0.12.
    margin
        How much closer to the evidence than to the null texts a guideline must be.
        Default 0.0 (closer at all).
    restate_threshold
        Similarity to a rubric line at or above which a guideline only restates it.
        Default 0.9.
    """

    min_support: float = 0.12
    margin: float = 0.0
    restate_threshold: float = 0.9

    def check(self, proposals: Sequence[Guideline], rubric: Rubric, dimension: str,
              examples: dict[str, Episode], embedder: Embedder
              ) -> tuple[list[Guideline], list[Guideline]]:
        """Split proposals into (kept, rejected); ``examples`` maps item id -> cited episode."""
        kept: list[Guideline] = []
        rejected: list[Guideline] = []
        if not proposals:
            return kept, rejected
        spec = rubric.dimension(dimension)
        rubric_lines = [spec.description, *spec.levels.values(), *([spec.na] if spec.na else [])]
        others = [" ".join([d.description, *d.levels.values()])
                  for d in rubric.dimensions if d.id != spec.id]
        null_vecs = embedder.embed([*OFF_TOPIC, *others])
        rubric_vecs = embedder.embed(rubric_lines)
        guideline_vecs = embedder.embed([g.text for g in proposals])
        for g, vec in zip(proposals, guideline_vecs, strict=True):
            cited = [examples[s] for s in g.sources if s in examples]
            if not cited:
                rejected.append(g.rejected("no_sources"))
                continue
            evidence = [ep.rationale for ep in cited if ep.rationale.strip()]
            if not evidence:  # labels without rationales: the items are all there is
                evidence = [item_text(ep.inputs)[:_EXCERPT_CHARS] for ep in cited]
            support = float(np.max(embedder.embed(evidence) @ vec))
            null = float(np.max(null_vecs @ vec))
            restate = float(np.max(rubric_vecs @ vec))
            # replace(), not a new Guideline: mode, scores and validation travel with it.
            scored = replace(g, sources=tuple(e.item_id for e in cited), support=len(cited),
                             grounding=round(support - null, 4))
            if restate >= self.restate_threshold:
                rejected.append(scored.rejected("restates_rubric"))
            elif support < self.min_support or support - null < self.margin:
                rejected.append(scored.rejected("ungrounded"))
            else:
                kept.append(scored)
        return kept, rejected
