"""Evaluation of judges against human labels: agreement metrics, paired bootstrap CIs, and
K-fold cross-validation of alignment (``cross_validate``, loaded on first use because it
imports DSPy)."""

from __future__ import annotations

import importlib
from typing import Any

from judgealign.evaluation.bootstrap import BootstrapResult, paired_bootstrap
from judgealign.evaluation.metrics import Agreement, abs_errors, agreement

_LAZY = {"cross_validate": "judgealign.evaluation.crossval",
         "CVResult": "judgealign.evaluation.crossval"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'judgealign.evaluation' has no attribute {name!r}")


__all__ = [
    "Agreement",
    "BootstrapResult",
    "CVResult",
    "abs_errors",
    "agreement",
    "cross_validate",
    "paired_bootstrap",
]
