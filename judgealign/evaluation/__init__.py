"""Evaluation of judges against human labels: agreement metrics and paired bootstrap CIs."""

from judgealign.evaluation.bootstrap import BootstrapResult, paired_bootstrap
from judgealign.evaluation.metrics import Agreement, abs_errors, agreement

__all__ = [
    "Agreement",
    "BootstrapResult",
    "abs_errors",
    "agreement",
    "paired_bootstrap",
]
