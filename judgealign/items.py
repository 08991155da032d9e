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


def render_notebook(data: Mapping[str, Any], *, source: str = "<notebook>",
                    include_outputs: bool = True, output_chars: int = 300) -> str:
    """Render nbformat-4 JSON as text with ``# [cell N, kind]`` markers (cells count from 1)."""
    cells = data.get("cells") if isinstance(data, Mapping) else None
    if not isinstance(cells, list):
        raise ItemError(f"{source}: not a Jupyter notebook (no 'cells' list)")
    parts: list[str] = []
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, Mapping) or "cell_type" not in cell:
            raise ItemError(f"{source}: cell {number} has no 'cell_type'")
        kind = cell["cell_type"]
        body = _joined(cell.get("source", ""))
        parts.append(f"# [cell {number}, {kind}]\n{body.rstrip()}")
        if include_outputs and kind == "code":
            shown = _outputs_text(cell.get("outputs") or [])
            if shown:
                if len(shown) > output_chars:
                    shown = shown[:output_chars] + " ..."
                parts.append(f"# [cell {number}, output]\n{shown.rstrip()}")
    return "\n\n".join(parts)


def _joined(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def _outputs_text(outputs: list[Any]) -> str:
    texts = []
    for out in outputs:
        if not isinstance(out, Mapping):
            continue
        if out.get("output_type") == "stream":
            texts.append(_joined(out.get("text", "")))
        elif out.get("output_type") == "error":
            texts.append(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}")
        else:
            plain = (out.get("data") or {}).get("text/plain")
            if plain:
                texts.append(_joined(plain))
    return "\n".join(t.rstrip() for t in texts if t.strip())


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
    """Read a notebook (``.ipynb``), a script (``.py``) or any text file as judge input."""
    path = Path(path)
    if not path.is_file():
        raise ItemError(f"file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ItemError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".ipynb":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ItemError(f"{path}: invalid notebook JSON (line {exc.lineno}, column "
                            f"{exc.colno}: {exc.msg})") from None
        return render_notebook(data, source=str(path))
    if suffix == ".py":
        return render_python_script(text)
    return text


def item_id_for(inputs: Mapping[str, str]) -> str:
    """A stable id from an item's content: the same fields give the same id on any machine."""
    blob = json.dumps({k: inputs[k] for k in sorted(inputs)}, ensure_ascii=False)
    return "item-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
