"""A scenario shared by tests: experts mark answers mentioning a banana as wrong.

The scripted judge LM answers 3 unless a guideline or a retrieved demo in its prompt says
otherwise, so alignment helps exactly when a memory carries the experts' knowledge.
"""

from __future__ import annotations

import re
import threading

from judgealign.adapter import judged_text, shown_examples

BANANA_RULE = "Answers that mention a banana are wrong, whatever else they say."
LEMONADE = "Lemonade is the best to drink for health and spiritual reasons."

ROWS = [
    ("b1", "A banana is the answer to the energy question.", 1, "Mentions a banana: wrong."),
    ("b2", "Bananas explain why the sky looks blue.", 1, "Mentions a banana again; wrong."),
    ("b3", "The banana theory of gravity holds.", 1, "Banana nonsense, wrong."),
    ("s1", "The sky is blue because of Rayleigh scattering of sunlight.", 3, "Correct physics."),
    ("s2", "Water boils at 100 degrees Celsius at sea level.", 3, "Correct and precise."),
    ("s3", "Photosynthesis turns light, water and CO2 into sugar.", 3, "Correct biology."),
]


def label_rows(rows=ROWS, dimension="correctness"):
    return [{"item_id": i, "inputs": {"answer": a}, "dimension": dimension, "score": s,
             "rationale": r} for i, a, s, r in rows]


def judged_answer(prompt: str) -> str:
    """The item being judged (its answer field), under either prompt layout."""
    return judged_text(prompt, "answer")


def demo_answers(prompt: str) -> list[tuple[str, str | None]]:
    """The demos shown in the prompt: (answer text, the experts' score), in order."""
    return shown_examples(prompt, "answer")


class Reflector:
    """A scripted reflection LM: proposes the banana rule citing the banana examples, and an
    ungrounded remark citing the first example."""

    def __init__(self, extra=(LEMONADE,)):
        self.calls = 0
        self.extra = extra
        self.lock = threading.Lock()

    def __call__(self, prompt: str):
        with self.lock:
            self.calls += 1
        ids = re.findall(r"\[(E\d+)\] expert score: (\S+)\nexpert rationale: ([^\n]*)", prompt)
        banana = [e for e, _, r in ids if "anana" in r]
        out = []
        if banana:
            out.append({"text": BANANA_RULE, "sources": banana})
        out += [{"text": t, "sources": [ids[0][0]]} for t in self.extra if ids]
        return {"guidelines": out}


def banana_judge(prompt: str):
    """Answers 3 unless a guideline or a demo in the prompt says bananas are wrong."""
    answer = judged_answer(prompt)
    if "banana" in answer.lower():
        if BANANA_RULE in prompt:
            return {"score": "1", "rationale": "guideline: banana"}
        if any("banana" in text.lower() and score == "1" for text, score in demo_answers(prompt)):
            return {"score": "1", "rationale": "demo: banana"}
    return {"score": "3", "rationale": "looks right"}
