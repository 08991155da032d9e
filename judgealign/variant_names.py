"""The names of the cross-validation variants, in one place that imports nothing.

The CLI checks ``--variants`` against :data:`VARIANT_NAMES` before any work starts (and
``judgealign --help`` must stay fast, so this module imports nothing); the evaluation package
builds from ``judgealign.build``; a test checks that the two lists agree.
"""

from __future__ import annotations

VARIANT_NAMES: tuple[str, ...] = (
    "baseline",
    "memalign",
    "semantic-only",
    "episodic-only",
    "memalign-sampled",
    "memalign-joint",
    "memalign-classic",
    "labeled-fewshot",
    "knn-fewshot",
    "bootstrap-fewshot",
    "mipro",
    "simba",
    "gepa",
    # reference predictors (no LM): accepted in --variants, run as references
    "constant",
    "neighbours",
)

__all__ = ["VARIANT_NAMES"]
