"""Level probabilities from the embedded engine.

When a call asks for logprobs and its schema declares string enums (a
judge's ``score``), the engine reads, right after generating, the model's distribution over
those values at the position where the value starts: the prefix is already in the KV cache,
so this costs one single-token forward pass, plus one per branching point of a multi-token
value (``"1"`` vs ``"10"``: is the next token the closing quote or ``0``?). Each value's
probability is the chain rule over its tokens, renormalised at every step over what the
grammar allows (the values' next tokens; the closing quote where a value ends): the
distribution the constrained sampler draws from at temperature 1, before top-k/top-p cuts.
They are reported as ``Response.logprobs``: one entry per such field, the written value as
the token and every value as an alternative (whole values, not tokens).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


def enum_fields(schema: Any) -> dict[str, list[str]]:
    """Top-level properties of a JSON schema that are enums of non-empty strings."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    out: dict[str, list[str]] = {}
    for name, prop in (props or {}).items():
        enum = prop.get("enum") if isinstance(prop, dict) else None
        if (isinstance(enum, list) and len(enum) >= 2
                and all(isinstance(v, str) and v for v in enum)):
            out[name] = list(enum)
    return out


def value_prefix(llama: Any, raw: str, name: str, prompt: list[int], generated: list[int]
                  ) -> list[int] | None:
    """The tokens before field ``name``'s value: the prompt, the generated tokens that spell
    the answer up to the value, and (when the value starts inside a token) the rest of that
    text tokenized afresh."""
    text = raw.encode("utf-8")
    m = re.search(rb'"' + re.escape(name.encode("utf-8")) + rb'"\s*:\s*"', text)
    if m is None:
        return None
    offset = m.end()
    used, spelled = 0, b""
    while used < len(generated):
        more = llama.detokenize(generated[: used + 1])
        if len(more) > offset or not text.startswith(more):
            break
        used, spelled = used + 1, more
    rest = text[len(spelled):offset]
    tail = llama.tokenize(rest, add_bos=False, special=False) if rest else []
    return prompt + generated[:used] + list(tail)


def logits_after(llama: Any, tokens: list[int]) -> Any:
    """Log-softmax of the model's next-token logits after ``tokens``, evaluating only what the
    KV cache does not hold already (at least the last token, whose logits are wanted)."""
    import numpy as np

    cached = llama.input_ids[: llama.n_tokens]
    common = 0
    limit = min(len(cached), len(tokens) - 1)
    while common < limit and int(cached[common]) == tokens[common]:
        common += 1
    llama.n_tokens = common
    llama.eval(tokens[common:])
    logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),))
    logits = logits.astype(np.float64)
    top = logits.max()
    return logits - top - math.log(float(np.exp(logits - top).sum()))


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def value_distribution(llama: Any, prefix: list[int], values: list[str],
                        closing: list[int]) -> dict[str, float]:
    """Value -> log probability after ``prefix``: the chain rule over each value's tokens,
    renormalised at each step over the allowed next tokens (and the closing quote, whose
    mass is that of every token starting with ``"``, where a value ends). Steps with one
    allowed token cost nothing."""
    seqs = {v: list(llama.tokenize(v.encode("utf-8"), add_bos=False, special=False))
            for v in values}
    out: dict[str, float] = {}

    def walk(consumed: list[int], logp: float) -> None:
        n = len(consumed)
        children = sorted({seq[n] for seq in seqs.values() if len(seq) > n
                           and seq[:n] == consumed})
        ends = [v for v, seq in seqs.items() if seq == consumed]
        options = len(children) + (1 if ends else 0)
        if options == 0:
            return
        if options == 1:
            step = {c: 0.0 for c in children}
            end = 0.0
        else:
            lsm = logits_after(llama, prefix + consumed)
            raw = {c: float(lsm[c]) for c in children}
            end = _logsumexp([float(lsm[t]) for t in closing]) if ends else -math.inf
            norm = _logsumexp([*raw.values(), end])
            step = {c: lp - norm for c, lp in raw.items()}
            end -= norm
        for v in ends:
            out[v] = logp + end
        for c in children:
            walk(consumed + [c], logp + step[c])

    walk([], 0.0)
    return out


_QUOTES: dict[str, list[int]] = {}


def quote_tokens(model: str, llama: Any) -> list[int]:
    """Ids of the tokens whose text starts with a double quote (a JSON string's end)."""
    if model not in _QUOTES:
        _QUOTES[model] = [t for t in range(llama.n_vocab())
                          if llama.detokenize([t]).startswith(b'"')]
    return _QUOTES[model]


def as_token_logprobs(levels: dict[str, dict[str, float]], text: str) -> tuple[Any, ...]:
    """One lm15 ``TokenLogprob`` per field: the written value, every value as an
    alternative (values with probability 0 are left out)."""
    from dspy.lm15 import TokenLogprob, TopLogprob

    try:
        written = json.loads(text)
    except ValueError:
        return ()
    out = []
    for name, dist in levels.items():
        value = written.get(name) if isinstance(written, dict) else None
        finite = {v: lp for v, lp in dist.items() if math.isfinite(lp)}
        if value not in finite:
            continue
        out.append(TokenLogprob(token=value, logprob=finite[value],
                                top=tuple(TopLogprob(token=v, logprob=lp)
                                          for v, lp in finite.items())))
    return tuple(out)
