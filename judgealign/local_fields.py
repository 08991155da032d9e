"""Answers built field by field on the embedded engine: the JSON scaffolding is read, not
generated.

Asked for a JSON object, llama.cpp's grammar-constrained sampling generates every key, quote
and comma one token at a time, one forward pass each, though the grammar allows exactly one
continuation there: ``{"score": "`` is 5 forced tokens, and in a nine-dimension joint answer
about two thirds of the generated tokens are such scaffolding (SmolLM2-135M writes ~23 tokens
per dimension, ~14 of them keys and punctuation). On a CPU a generated token costs about as
much as ten prompt tokens evaluated in a batch.

When the schema is a flat object of strings (every judging call: ``score`` and
``rationale``; a joint call: a pair per dimension), :func:`fill_fields` writes the answer
field by field instead:

* the scaffolding up to a value (``{"score": "``) is appended to the prompt and evaluated as
  a batch, reusing the KV cache for everything before it;
* an enum value (a score level) is the mode of the model's distribution over the allowed
  values at that position (:func:`judgealign.local_levels.value_distribution`: the chain rule
  over each value's tokens, renormalised over what the grammar allows), sampled from it at a
  temperature above 0. That distribution is the call's level probabilities, read in the same
  pass rather than afterwards;
* a free string is generated under a JSON-string grammar up to its closing quote.

The token budget counts the scaffolding, as a constrained generation would have generated
it, so answers are as long as before. Other schemas (lists, numbers, nested objects) and
models whose chat format is not a GGUF chat template keep llama.cpp's grammar path.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from judgealign.local_levels import value_distribution

# A JSON string's body and its closing quote (llama.cpp's own JSON grammar rule for chars).
_STRING_GRAMMAR = r'''root ::= char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" hex hex hex hex)
hex ::= [0-9a-fA-F]
'''
_PROPERTY_KEYS = {"type", "enum", "title", "description"}
# An escape the budget cut short: a lone backslash or an incomplete \uXXXX at the end.
_CUT_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{0,3})?$")


def flat_fields(schema: Any) -> list[tuple[str, list[str] | None]] | None:
    """``(name, enum values or None)`` per property of a flat object schema whose properties
    are all strings (plain or enums), all required, in order; ``None`` for any other schema."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    props = schema.get("properties")
    if not isinstance(props, dict) or not props:
        return None
    required = schema.get("required")
    if required is not None and list(required) != list(props):
        return None
    out: list[tuple[str, list[str] | None]] = []
    for name, prop in props.items():
        if (not isinstance(prop, dict) or prop.get("type") != "string"
                or set(prop) - _PROPERTY_KEYS or not _plain(name)):
            return None
        enum = prop.get("enum")
        if enum is None:
            out.append((name, None))
        elif isinstance(enum, list) and enum and all(isinstance(v, str) and v and _plain(v)
                                                     for v in enum):
            out.append((name, list(enum)))
        else:
            return None
    return out


def _plain(text: str) -> bool:
    """Whether ``text`` is written the same inside a JSON string (nothing to escape)."""
    return json.dumps(text)[1:-1] == text


def chat_tokens(llama: Any, messages: list[dict[str, str]]) -> list[int] | None:
    """The prompt tokens llama-cpp-python's chat completion would evaluate for ``messages``
    when its chat format is one of the model's GGUF chat templates (the Jinja template, then
    tokenized with special tokens on); ``None`` for any other chat format or handler."""
    name = getattr(llama, "chat_format", None) or ""
    if getattr(llama, "chat_handler", None) is not None or not name.startswith("chat_template."):
        return None
    key = ("tokenizer.chat_template" if name == "chat_template.default"
           else "tokenizer." + name)
    template = (getattr(llama, "metadata", None) or {}).get(key)
    if not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos, bos = llama.token_eos(), llama.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos])
    result = formatter(messages=messages)
    return list(llama.tokenize(result.prompt.encode("utf-8"),
                               add_bos=not result.added_special, special=True))


@dataclass
class Filled:
    """An answer written by :func:`fill_fields`: its JSON ``text``, the level distributions
    of its enum fields (value -> log probability), its length in tokens, and whether every
    field was reached within the budget."""

    text: str
    levels: dict[str, dict[str, float]] = field(default_factory=dict)
    tokens: int = 0
    complete: bool = True


@cache
def _string_grammar() -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(_STRING_GRAMMAR, verbose=False)


def fill_fields(llama: Any, prompt: list[int], fields: list[tuple[str, list[str] | None]], *,
                max_tokens: int, temperature: float, seed: int, closing: list[int]) -> Filled:
    """Write the JSON answer to ``prompt`` field by field (see the module docstring).

    ``fields`` from :func:`flat_fields`; ``max_tokens`` bounds the answer's tokens,
    scaffolding included; ``closing`` are the ids of the tokens that start with a double
    quote (a value's end, for :func:`value_distribution`).

    Each free string gets an equal share of what the answer's skeleton (keys, punctuation,
    the longest enum values) leaves of the budget, so a model that writes on in the first
    rationale cannot crowd out the fields after it (with one budget for the whole answer, a
    nine-dimension answer of SmolLM2-135M lost its last dimensions that way). A budget that
    runs out anyway cuts the current string (closed) and leaves the remaining fields out
    (``complete`` False)."""
    rng = random.Random(seed)
    count = _token_counter(llama)
    skeleton = "{ " + ", ".join(f'{json.dumps(name)}: "{max(values, key=len) if values else ""}"'
                                for name, values in fields) + " }"
    strings = sum(1 for _, values in fields if values is None)
    share = max(1, (max_tokens - count(skeleton)) // max(strings, 1))
    # Spaced as SmolLM2 writes JSON under llama.cpp's grammar ("{ " ... " }"): the closest
    # context to what the model would have generated itself.
    text, out = "{ ", Filled("")
    for i, (name, values) in enumerate(fields):
        head = text + ("" if i == 0 else ", ") + json.dumps(name) + ': "'
        used = count(head)
        if used + 1 >= max_tokens:  # not even a one-token value and its quote fit
            out.complete = False
            break
        text = head
        tokens = prompt + _answer_tokens(llama, text)
        if values is not None:
            dist = value_distribution(llama, tokens, values, closing)
            out.levels[name] = dist
            text += _choose(dist, temperature, rng) + '"'
            continue
        answer = llama.create_completion(prompt=tokens,
                                         max_tokens=min(share, max_tokens - used - 1),
                                         temperature=temperature, seed=seed, stop=['"'],
                                         grammar=_string_grammar())
        body = answer["choices"][0]["text"]
        text += _CUT_ESCAPE.sub("", body) + '"'
    out.text = text + " }"
    out.tokens = count(out.text)
    return out


def _answer_tokens(llama: Any, text: str) -> list[int]:
    return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def _token_counter(llama: Any) -> Any:
    return lambda text: len(_answer_tokens(llama, text))


def _choose(dist: dict[str, float], temperature: float, rng: random.Random) -> str:
    """The most probable value (temperature 0), else one drawn from the distribution
    sharpened or flattened by the temperature."""
    finite = {v: lp for v, lp in dist.items() if math.isfinite(lp)}
    if not finite:
        return next(iter(dist))
    if temperature <= 0:
        return max(finite, key=finite.__getitem__)
    top = max(finite.values())
    weights = [math.exp((lp - top) / temperature) for lp in finite.values()]
    return rng.choices(list(finite), weights=weights)[0]


__all__ = ["Filled", "chat_tokens", "fill_fields", "flat_fields"]
