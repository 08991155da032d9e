"""Cost metering: LM calls and tokens spent inside a block, from DSPy's usage tracker.

DSPy records every LM call's usage on the tracker active in its settings context (answers
served from a cache cost nothing and are not counted). Reading it -- rather than diffing an
LM's ``history`` -- keeps working with history disabled, counts calls made from judging
threads (``RubricJudge.batch`` carries the tracker into them), and nests: an inner meter's
calls are counted by the meters around it too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
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


@dataclass(frozen=True)
class Cost:
    """LM calls, tokens and (when litellm prices every model called) dollars."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dollars: float | None = None
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from the provider's cache

    def describe(self) -> str:
        text = (f"{self.calls} calls, {self.prompt_tokens + self.completion_tokens:,} tokens")
        if self.cached_prompt_tokens:
            text += f" ({self.cached_prompt_tokens:,} prompt tokens cached)"
        return text + (f", ${self.dollars:.4f}" if self.dollars is not None else "")


def _cached(entry: dict[str, Any]) -> int:
    """Prompt tokens a provider served from its prompt cache, where it reports them
    (OpenAI-style ``prompt_tokens_details.cached_tokens``; Anthropic-style
    ``cache_read_input_tokens``)."""
    details = entry.get("prompt_tokens_details")
    if isinstance(details, dict):
        return _tokens(details, "cached_tokens")
    return _tokens(entry, "cache_read_input_tokens")


@lru_cache(maxsize=64)
def _price(model: str) -> tuple[float, float] | None:
    """litellm's dollars per prompt and per completion token for ``model`` (its bundled price
    table; no download), ``None`` for a model it does not price (the embedded one, a private
    server). Looked up once per model, with litellm's "Provider List" hint silenced."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never a download
    try:
        import litellm
    except ImportError:
        return None
    quiet = litellm.suppress_debug_info
    litellm.suppress_debug_info = True
    try:
        prompt, completion = litellm.cost_per_token(model=model, prompt_tokens=1,
                                                    completion_tokens=1)
        return float(prompt), float(completion)
    except Exception:  # litellm raises for models missing from its table
        return None
    finally:
        litellm.suppress_debug_info = quiet


def _dollars(model: str, prompt: int, completion: int) -> float | None:
    price = _price(model)
    return None if price is None else prompt * price[0] + completion * price[1]


class CostMeter:
    """Counts the LM calls, prompt and completion tokens and seconds of a ``with`` block.

    ``lm`` is accepted for compatibility and ignored: every LM called in the block is
    counted (a judge and its reflection LM are often one model, and counting per model name
    would count their calls twice).

    After the block: ``calls``, ``prompt_tokens``, ``completion_tokens``,
    ``cached_prompt_tokens`` (where the provider reports its prompt-cache hits) and
    ``seconds``.
    """

    def __init__(self, lm: Any = None) -> None:
        self.lm = lm
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.cached_prompt_tokens = 0
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
        cost = self.running()
        self.calls, self.prompt_tokens = cost.calls, cost.prompt_tokens
        self.completion_tokens = cost.completion_tokens
        self.cached_prompt_tokens = cost.cached_prompt_tokens

    def running(self) -> Cost:
        """The cost so far (callable inside the block, e.g. by a progress bar)."""
        calls = prompt = completion = cached = 0
        dollars: float | None = 0.0
        for model, rows in list(self._tracker.usage_data.items()):
            rows = list(rows)  # judging threads may append meanwhile
            p = sum(_tokens(e, "prompt_tokens", "input_tokens") for e in rows)
            c = sum(_tokens(e, "completion_tokens", "output_tokens") for e in rows)
            calls, prompt, completion = calls + len(rows), prompt + p, completion + c
            cached += sum(_cached(e) for e in rows)
            price = _dollars(model, p, c) if dollars is not None else None
            dollars = None if price is None else dollars + price
        return Cost(calls, prompt, completion, dollars if calls else None, cached)


__all__ = ["Cost", "CostMeter"]
