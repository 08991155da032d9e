"""Cost metering: LM calls and tokens spent inside a block, from DSPy's usage tracker.

DSPy records every LM call's usage on the tracker active in its settings context (answers
served from a cache cost nothing and are not counted). Reading it -- rather than diffing an
LM's ``history`` -- keeps working with history disabled, counts calls made from judging
threads (``RubricJudge.batch`` carries the tracker into them), and nests: an inner meter's
calls are counted by the meters around it too.
"""

from __future__ import annotations

import time
from typing import Any

from dspy.utils.usage_tracker import UsageTracker


class _ChainedTracker(UsageTracker):
    """A usage tracker that also reports every entry to the tracker it replaced."""

    def __init__(self, parent: UsageTracker | None) -> None:
        super().__init__()
        self.parent = parent

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        super().add_usage(lm, usage_entry)
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)


def _tokens(entry: dict[str, Any], *keys: str) -> int:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return 0


class CostMeter:
    """Counts the LM calls, prompt and completion tokens and seconds of a ``with`` block.

    ``lm`` is accepted for compatibility and ignored: every LM called in the block is
    counted (a judge and its reflection LM are often one model, and counting per model name
    would count their calls twice).

    After the block: ``calls``, ``prompt_tokens``, ``completion_tokens``, ``seconds``.
    """

    def __init__(self, lm: Any = None) -> None:
        self.lm = lm
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.seconds = 0.0
        self._context: Any = None

    def __enter__(self) -> CostMeter:
        import dspy

        self._tracker = _ChainedTracker(dspy.settings.usage_tracker)
        self._context = dspy.context(usage_tracker=self._tracker)
        self._context.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start
        self._context.__exit__(*exc)
        entries = [e for rows in self._tracker.usage_data.values() for e in rows]
        self.calls = len(entries)
        self.prompt_tokens = sum(_tokens(e, "prompt_tokens", "input_tokens") for e in entries)
        self.completion_tokens = sum(_tokens(e, "completion_tokens", "output_tokens")
                                     for e in entries)


__all__ = ["CostMeter"]
