"""Optimizers that compile rubric judges: MemAlign, and the DSPy baselines we compare with."""

from judgealign.optimizers.memalign import CompileReport, MemAlign

__all__ = ["CompileReport", "MemAlign"]
