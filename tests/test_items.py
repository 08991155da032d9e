from __future__ import annotations

import json

import pytest

from judgealign.errors import ItemError
from judgealign.items import (
    clip,
    estimate_tokens,
    item_id_for,
    read_item_file,
    render_python_script,
    truncate,
)


def test_notebook_is_rendered_with_cell_markers_and_outputs(notebook_file):
    text = read_item_file(notebook_file)
    assert text.startswith("# [cell 1, markdown]\n# Flight delays")
    assert "# [cell 2, code]\nimport pandas as pd" in text
    assert "# [cell 3, output]\ndep_delay    12" in text


def test_python_script_cells(tmp_path):
    assert render_python_script("a = 1\n# %%\nb = 2\n") == \
        "# [cell 1, code]\na = 1\n\n# [cell 2, code]\nb = 2"
    path = tmp_path / "s.py"
    path.write_text("x = 1\n")
    assert read_item_file(path) == "# [cell 1, code]\nx = 1"


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ItemError, match="file not found: .*nope.ipynb"):
        read_item_file(tmp_path / "nope.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(ItemError, match=r"bad.ipynb: invalid notebook JSON \(line 1"):
        read_item_file(bad)
    odd = tmp_path / "odd.ipynb"
    odd.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ItemError, match="odd.ipynb: not a Jupyter notebook"):
        read_item_file(odd)


def test_truncate_fits_budget_and_marks_the_cut():
    text = "".join(f"line {i}\n" for i in range(5000))
    out = truncate(text, 300)
    assert estimate_tokens(out) <= 300
    assert out.startswith("line 0") and out.rstrip().endswith("line 4999")
    assert "cut to fit" in out
    assert truncate("short", 300) == "short"


def test_clip_keeps_the_most_leading_words_that_fit():
    words = [f"word{i}" for i in range(200)]
    text = " ".join(words)
    out = clip(text, 24)
    assert estimate_tokens(out) <= 24 and out.endswith("…")
    kept = out[:-1].split()
    assert kept == words[:len(kept)] and kept
    # One word more would not fit: the cut is as late as the budget allows.
    assert estimate_tokens(" ".join(words[:len(kept) + 1]) + "…") > 24
    assert clip("short note", 24) == "short note" and clip(text, 0) == ""


def test_item_ids_are_stable_and_content_based():
    assert item_id_for({"a": "x", "b": "y"}) == item_id_for({"b": "y", "a": "x"})
    assert item_id_for({"a": "x"}) != item_id_for({"a": "z"})
