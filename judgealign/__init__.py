"""judgealign: make LLM judges agree with human experts.

    from judgealign import align, LabelSet, RubricJudge

    labels = LabelSet.from_jsonl("labels.jsonl", rubric="ml_notebook")
    judge = align(RubricJudge("ml_notebook"), labels)   # an aligned copy (MemAlign)
    result = judge(notebook=text)                       # a JudgeResult, one verdict per dimension
    judge.save("judges/v1"); judge = judgealign.load("judges/v1", lm="openai/gpt-4.1-mini")

This module only re-exports; heavy libraries (dspy, chromadb, mlflow) load on first use, so
importing judgealign is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from judgealign._version import __version__

_LAZY = {
    "align": "judgealign.api",
    "load": "judgealign.api",
    "LabelSet": "judgealign.labels",
    "Label": "judgealign.labels",
    "RubricJudge": "judgealign.program",
    "JudgeResult": "judgealign.program",
    "DimensionResult": "judgealign.program",
    "MemAlign": "judgealign.optimizers.memalign",
    "Settings": "judgealign.config",
    "load_config": "judgealign.config",
    "cross_validate": "judgealign.evaluation.crossval",
    "evaluate": "judgealign.evaluation.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'judgealign' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
