"""Shared cases of the cross-validation tests: a task where expert feedback must help, its
scripted judge and reflection LMs, and a short way to run ``cross_validate`` on it.

The experts score every answer mentioning "banana" 1 on correctness, every other answer 3.
The scripted judge answers 3 unless its prompt tells it otherwise: the learned guideline, or
a demo that shows a banana answer scored 1. Clarity is 2 everywhere, and so is the judge.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from judgealign.adapter import judged_text, shown_examples
from judgealign.config import Settings
from judgealign.evaluation.crossval import cross_validate
from judgealign.evaluation.options import CVOptions
from judgealign.evaluation.results import CVResult
from judgealign.labels import LabelSet
from judgealign.testing import dimension_of, scripted_lm

RULE = "Answers that mention banana are wrong."
PLAIN = "Plain, readable sentences are what the experts call readable."


def item_of(prompt: str) -> str:
    """The judged item's answer text, lower-cased (either prompt layout)."""
    return judged_text(prompt, "answer").lower()


def judge_responder(prompt: str) -> dict[str, str]:
    if dimension_of(prompt) == "Clarity":
        return {"score": "2", "rationale": "readable"}
    item = item_of(prompt)
    demo_says = any("banana" in text and score == "1"
                    for text, score in shown_examples(prompt, "answer"))
    if "banana" in item and (RULE in prompt or demo_says):
        return {"score": "1", "rationale": "mentions banana"}
    return {"score": "3", "rationale": "looks right"}


def reflection_responder(prompt: str) -> dict[str, list]:
    """A capable reflection LM: cites the banana examples (the only ones scored 1) for the
    rule, and on a dimension without them (clarity) a harmless rule citing what it saw, so
    MemAlign's ``auto`` mode never takes it for an LM that cannot cite."""
    ones = re.findall(r"\[(E\d+)\] expert score: 1\n", prompt)
    if ones:
        return {"guidelines": [{"text": RULE, "sources": ones}]}
    seen = re.findall(r"\[(E\d+)\] expert score", prompt)
    return {"guidelines": [{"text": PLAIN, "sources": seen}] if seen else []}


def banana_rows(n: int = 12) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        banana = i % 2 == 0
        answer = f"a banana answer number {i}" if banana else f"the sky is blue, reason {i}"
        rows.append({"item_id": f"i{i:02d}", "inputs": {"answer": answer},
                     "dimension": "correctness", "score": 1 if banana else 3,
                     "rationale": "Mentions banana, which is wrong." if banana
                     else "Correct explanation."})
        rows.append({"item_id": f"i{i:02d}", "inputs": {"answer": answer},
                     "dimension": "clarity", "score": 2, "rationale": "readable"})
    return rows


def banana_labels(rubric: Any, n: int = 12) -> LabelSet:
    return LabelSet.from_records(banana_rows(n), rubric=rubric)


def lms() -> tuple:
    return (scripted_lm(judge_responder, name="scripted/judge"),
            scripted_lm(reflection_responder, name="scripted/reflect"))


def run(rubric: Any, labels: LabelSet, settings: Settings | None = None, *,
        lms: tuple | None = None, **options: Any) -> CVResult:
    """``cross_validate`` with scripted LMs, 3 folds, 300 resamples and no progress bars,
    unless ``options`` say otherwise."""
    judge_lm, reflect_lm = lms or globals()["lms"]()
    options.setdefault("folds", 3)
    options.setdefault("n_bootstrap", 300)
    options.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no usable guideline" for clarity, by design
        return cross_validate(rubric, labels, settings or Settings(), CVOptions(**options),
                              lm=judge_lm, reflection_lm=reflect_lm)
