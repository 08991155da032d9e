"""KV states of prompt prefixes kept by the embedded engine, so that a run reads an item once.

llama.cpp reuses its KV cache only for what a prompt shares with the call just before it.
Every judging prompt starts with [rubric text, item, acknowledgement] (the item-first layout,
and joint mode with guidelines and demos after the item), and consecutive calls for one item
share that. But a run comes back to an item after many others: cross-validation judges it
with the unaligned judge, then as a training item when each later fold calibrates its aligned
judge, then held out by its own fold's aligned judge. Each time the KV cache holds some other
item, and the item was read again, five times per cross-validation.

:class:`PrefixStates` keeps the KV state of the prompt's shared part (every message but the
last) per distinct prefix, and loads it when a later prompt starts with the same tokens: the
engine then evaluates only the last message. States are dropped least recently used first
beyond a byte budget (SmolLM2-135M: 23 KB per token, so about 100 MB per notebook prompt).
Only the cells of llama.cpp's sequence 0 are saved (``llama_state_seq_*``), not the logits,
so a state is as small as the KV it holds; the engine always evaluates at least the last
prompt token after a load, which recomputes the logits it reads.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

# A shared part shorter than this is not worth a state: reading it costs less than the copy.
MIN_PREFIX_TOKENS = 256
# The default budget: a third of physical memory, at most 8 GiB (a cross-validation of the
# 64 bundled notebooks keeps about 6 GiB of SmolLM2 states).
_MAX_DEFAULT_BYTES = 8 << 30


def default_budget() -> int:
    """Bytes of states kept by default: a third of physical memory, at most 8 GiB."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 0
    return min(_MAX_DEFAULT_BYTES, physical // 3) if physical > 0 else 1 << 30


def common_prefix(held: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading tokens ``held`` and ``tokens`` share."""
    n, limit = 0, min(len(held), len(tokens))
    while n < limit and int(held[n]) == tokens[n]:
        n += 1
    return n


class PrefixStates:
    """KV states of prompt prefixes for one llama.cpp model context, within ``budget`` bytes.

    Call :meth:`prepare` with the lock of the model held, before evaluating a prompt whose
    first ``boundary`` tokens are its shared part. ``hits``/``misses`` count prepared prompts
    whose prefix was (not) already held; ``tokens_loaded`` the prompt tokens not evaluated
    again because a kept state held them.
    """

    def __init__(self, budget: int) -> None:
        self.budget = max(0, int(budget))
        self._states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.tokens_loaded = 0

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        """Drop every kept state (the counters stay)."""
        self._states.clear()
        self.bytes = 0

    def prepare(self, llama: Any, prompt: Sequence[int], boundary: int) -> None:
        """Leave ``llama``'s KV cache holding at least ``prompt[:boundary]``: from the live
        cache, from a kept state, or evaluated now (and kept)."""
        if self.budget <= 0 or boundary < MIN_PREFIX_TOKENS or boundary >= len(prompt):
            return
        key = tuple(int(t) for t in prompt[:boundary])
        live = common_prefix(llama.input_ids[: llama.n_tokens], key)
        if key in self._states:
            self._states.move_to_end(key)
            self.hits += 1
            if live < boundary and self._load(llama, key):
                self.tokens_loaded += boundary - live
            return
        self.misses += 1
        if live < boundary:
            llama.n_tokens = live
            llama.eval(list(key[live:]))
        self._save(llama, key)

    def _save(self, llama: Any, key: tuple[int, ...]) -> None:
        import llama_cpp

        ctx = llama._ctx.ctx
        # The sequence's cells beyond the prefix (the previous call's answer) would be saved
        # with it: drop them, the next evaluation replaces them anyway.
        llama.n_tokens = len(key)
        llama._ctx.kv_cache_seq_rm(0, len(key), -1)
        size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
        if size <= 0 or size > self.budget:
            return
        buf = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0))
        if written <= 0:
            return
        self._states[key] = bytes(buf[:written]) if written < size else bytes(buf)
        self.bytes += written
        while self.bytes > self.budget and self._states:
            _, dropped = self._states.popitem(last=False)
            self.bytes -= len(dropped)

    def _load(self, llama: Any, key: tuple[int, ...]) -> bool:
        import llama_cpp

        data = self._states[key]
        llama._ctx.kv_cache_seq_rm(0, 0, -1)
        llama.n_tokens = 0
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if int(llama_cpp.llama_state_seq_set_data(llama._ctx.ctx, buf, len(data), 0)) <= 0:
            log.debug("a kept prefix state did not load; the prompt is evaluated instead")
            del self._states[key]
            self.bytes -= len(data)
            return False
        llama.input_ids[: len(key)] = key
        llama.n_tokens = len(key)
        return True


__all__ = ["MIN_PREFIX_TOKENS", "PrefixStates", "common_prefix", "default_budget"]
