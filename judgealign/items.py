"""Items to judge: reading notebooks and text fields, rendering them, fitting them to a budget.

A notebook is rendered with one marker per cell (``# [cell 3, code]``) so that rationales can
cite cells. Everything an LM sees passes through :func:`truncate` so that item, guidelines
and demos fit the model's context together.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from judgealign.errors import ItemError
from judgealign.textfiles import JSON_ERRORS, describe_json_error, read_text, shown

TokenCounter = Callable[[str], int]
TRUNCATION_MARKER = "[... {n} characters cut to fit the judge's context ...]"


def estimate_tokens(text: str) -> int:
    """A conservative token estimate (3.5 characters a token) for LMs without a tokenizer."""
    return math.ceil(len(text) / 3.5)


def truncate(text: str, max_tokens: int, count: TokenCounter = estimate_tokens) -> str:
    """Fit ``text`` into ``max_tokens``, keeping its head and tail and marking the cut.

    The head gets two thirds of the room because a notebook's setup and data handling come
    first; the tail keeps its conclusions. Returns ``text`` unchanged when it already fits.
    """
    if max_tokens <= 0:
        return ""
    if count(text) <= max_tokens:
        return text
    # Characters per token measured on this very text, so the first cut is nearly right.
    ratio = len(text) / max(count(text), 1)
    keep = int(max_tokens * ratio) - len(TRUNCATION_MARKER) - 8
    while keep > 0:
        head, tail = text[: keep * 2 // 3], text[len(text) - keep // 3:] if keep >= 3 else ""
        marker = TRUNCATION_MARKER.format(n=len(text) - len(head) - len(tail))
        candidate = f"{head}\n{marker}\n{tail}"
        if count(candidate) <= max_tokens:
            return candidate
        keep = int(keep * 0.9)
    return TRUNCATION_MARKER.format(n=len(text))[: max(1, int(max_tokens * ratio))]


def clip(text: str, max_tokens: int, count: TokenCounter = estimate_tokens) -> str:
    """The head of ``text`` within ``max_tokens``, cut at a word and ended with "…".

    For one-line snippets (a demo's rationale): :func:`truncate`'s marker alone costs about
    15 tokens, half of a 32-token line, and a snippet's point is in its first words anyway.
    Returns ``text`` unchanged when it already fits."""
    if max_tokens <= 0:
        return ""
    if count(text) <= max_tokens:
        return text
    words = text.split()
    lo, hi = 0, len(words)  # the most words whose clip fits (count grows with the words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid]) + "…") <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + "…"


def render_notebook(data: Mapping[str, Any], *, source: str = "<notebook>",
                    include_outputs: bool = True, output_chars: int = 300) -> str:
    """Render nbformat-4 JSON as text with ``# [cell N, kind]`` markers (cells count from 1).

    Raises :class:`ItemError` naming ``source`` and the cell when the JSON is not shaped like a
    notebook: ``cells`` not a list, a cell without a text ``cell_type``, a ``source`` that is
    neither text nor a list of text, ``outputs`` that are not a list of objects, an output's
    ``text`` or ``data`` of the wrong type. Nothing is skipped silently.
    """
    cells = data.get("cells") if isinstance(data, Mapping) else None
    if not isinstance(cells, list):
        raise ItemError(f"{source}: not a Jupyter notebook (no 'cells' list)")
    parts: list[str] = []
    for number, cell in enumerate(cells, start=1):
        where = f"{source}: cell {number}"
        if not isinstance(cell, Mapping) or "cell_type" not in cell:
            raise ItemError(f"{where} has no 'cell_type'")
        kind = cell["cell_type"]
        if not isinstance(kind, str) or not kind.strip():
            raise ItemError(f"{where}: 'cell_type' must be text, got {_kind_of(kind)}")
        body = _joined(cell.get("source", ""), f"{where}: 'source'")
        parts.append(f"# [cell {number}, {kind}]\n{body.rstrip()}")
        if include_outputs and kind == "code":
            outputs = cell.get("outputs")
            if outputs is None:
                outputs = []
            if not isinstance(outputs, list):
                raise ItemError(f"{where}: 'outputs' must be a list, got {_kind_of(outputs)}")
            printed = _outputs_text(outputs, where)
            if printed:
                if len(printed) > output_chars:
                    printed = printed[:output_chars] + " ..."
                parts.append(f"# [cell {number}, output]\n{printed.rstrip()}")
    return "\n\n".join(parts)


def _kind_of(value: Any) -> str:
    """A short description of a JSON value for messages (never the whole value)."""
    names = {dict: "an object", list: "a list", str: "text", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _joined(source: Any, where: str) -> str:
    """nbformat's multiline text: a string or a list of strings (``None`` is empty)."""
    if source is None:
        return ""
    if isinstance(source, str):
        return source
    if isinstance(source, list):
        bad = next((i for i, part in enumerate(source) if not isinstance(part, str)), None)
        if bad is None:
            return "".join(source)
        raise ItemError(f"{where} must be text or a list of text; item {bad + 1} is "
                        f"{_kind_of(source[bad])}")
    raise ItemError(f"{where} must be text or a list of text, got {_kind_of(source)}")


def _outputs_text(outputs: list[Any], where: str) -> str:
    texts = []
    for number, out in enumerate(outputs, start=1):
        here = f"{where}, output {number}"
        if not isinstance(out, Mapping):
            raise ItemError(f"{here} must be an object, got {_kind_of(out)}")
        kind = out.get("output_type")
        if kind == "stream":
            texts.append(_joined(out.get("text", ""), f"{here}: 'text'"))
        elif kind == "error":
            texts.append(f"{_scalar(out.get('ename', 'Error'))}: {_scalar(out.get('evalue', ''))}")
        else:
            data = out.get("data")
            if data is None:
                data = {}
            if not isinstance(data, Mapping):
                raise ItemError(f"{here}: 'data' must be an object, got {_kind_of(data)}")
            plain = data.get("text/plain")
            if plain:
                texts.append(_joined(plain, f"{here}: 'data.text/plain'"))
    return "\n".join(t.rstrip() for t in texts if t.strip())


def _scalar(value: Any) -> str:
    """An error output's name or value as text; nested JSON is shown as its kind, not dumped."""
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return str(value)
    return f"<{_kind_of(value)}>"


def render_python_script(text: str) -> str:
    """Render a ``.py`` file; ``# %%`` separators (jupytext percent format) split it into cells."""
    chunks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("# %%"):
            if any(x.strip() for x in chunks[-1]):
                chunks.append([])
            continue
        chunks[-1].append(line)
    cells = ["\n".join(c).strip("\n") for c in chunks if any(x.strip() for x in c)]
    return "\n\n".join(f"# [cell {i}, code]\n{body}" for i, body in enumerate(cells, start=1))


def read_item_file(path: str | Path) -> str:
    """Read a notebook (``.ipynb``), a script (``.py``) or any text file as judge input.

    The file must be UTF-8 (a byte-order mark is dropped). Every problem (missing file, bad
    path, other encoding, invalid notebook JSON, a notebook of the wrong shape) raises
    :class:`ItemError` naming the file, and for notebooks the cell.
    """
    text = read_text(path, error=ItemError, what="file")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ipynb":
        try:
            data = json.loads(text)
        except JSON_ERRORS as exc:
            raise ItemError(f"{shown(path)}: invalid notebook JSON "
                            f"({describe_json_error(exc)})") from None
        return render_notebook(data, source=shown(path))
    if suffix == ".py":
        return render_python_script(text)
    return text


def item_id_for(inputs: Mapping[str, str]) -> str:
    """A stable id from an item's content: the same fields give the same id on any machine."""
    blob = json.dumps({k: inputs[k] for k in sorted(inputs)}, ensure_ascii=False)
    return "item-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def fit_fields(inputs: dict[str, str], budget: int, count: TokenCounter) -> dict[str, str]:
    """``inputs`` cut to ``budget`` tokens in all: short fields get what they need, the
    longest field the rest (at least 32 tokens each)."""
    if not inputs:
        return inputs
    order = sorted(inputs, key=lambda name: count(inputs[name]))
    fitted: dict[str, str] = {}
    for i, name in enumerate(order):
        share = max(budget // (len(order) - i), 32)
        fitted[name] = truncate(inputs[name], share, count)
        budget -= count(fitted[name])
    return {name: fitted[name] for name in inputs}
