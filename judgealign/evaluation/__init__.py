"""Evaluation of judges against human labels: agreement metrics (failures charged), paired
bootstrap CIs, and K-fold cross-validation of alignment (``cross_validate`` with
``CVOptions``; loaded on first use because it imports DSPy)."""

from __future__ import annotations

import importlib
from typing import Any

from judgealign.evaluation.bootstrap import BootstrapResult, paired_bootstrap
from judgealign.evaluation.metrics import Agreement, abs_errors, agreement, charged_errors
from judgealign.evaluation.options import CVOptions, CVOptionsError

_LAZY = {"cross_validate": "judgealign.evaluation.crossval",
         "CVResult": "judgealign.evaluation.results",
         "LeakageError": "judgealign.evaluation.leakage",
         "assign_folds": "judgealign.evaluation.folds"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'judgealign.evaluation' has no attribute {name!r}")


__all__ = [
    "Agreement",
    "BootstrapResult",
    "CVOptions",
    "CVOptionsError",
    "CVResult",
    "LeakageError",
    "abs_errors",
    "agreement",
    "assign_folds",
    "charged_errors",
    "cross_validate",
    "paired_bootstrap",
]
