"""Checks of the bundled data sets: ml_notebooks (generated) and conala (human grades).

Fast and offline: only json, re, tomllib, nbformat and the generator script itself.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import sys
import tomllib
import types
from collections import Counter
from functools import cache
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ML = ROOT / "datasets" / "ml_notebooks"
CONALA = ROOT / "datasets" / "conala"
BUILD = ROOT / "datasets" / "ml_notebooks_build" / "build.py"
DIMENSIONS = [
    "library_installation", "exploratory_data_analysis", "data_imputation",
    "feature_engineering", "model_training", "model_use", "metrics_evaluation",
    "mlflow_logging", "cell_organization",
]
CELL_REF = re.compile(r"\bcells? (\d+)(?:-(\d+))?((?:, \d+)*)(?: and (\d+))?", re.I)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@cache
def labels() -> list[dict]:
    return _jsonl(ML / "labels.jsonl")


@cache
def recipes() -> dict[str, dict]:
    return {r["id"]: r for r in _jsonl(ML / "recipes.jsonl")}


@cache
def notebooks() -> dict[str, nbformat.NotebookNode]:
    return {p.stem: nbformat.read(p, as_version=nbformat.NO_CONVERT)
            for p in sorted((ML / "notebooks").glob("*.ipynb"))}


@cache
def rubric(name: str) -> dict:
    return tomllib.loads((ROOT / "signatures" / f"{name}.toml").read_text(encoding="utf-8"))


def _sources(nb: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in nb.cells]


def _cited_numbers(text: str) -> set[int]:
    nums: set[int] = set()
    for first, last, middle, tail in CELL_REF.findall(text):
        start = int(first)
        nums.update(range(start, int(last) + 1) if last else [start])
        nums.update(int(x) for x in re.findall(r"\d+", middle))
        if tail:
            nums.add(int(tail))
    return nums


def _absent_found(absent: str, sources: list[str]) -> bool:
    if absent.startswith("import:"):
        name = absent.split(":", 1)[1]
        pattern = re.compile(rf"^\s*(from \S+ )?import .*\b{re.escape(name)}\b", re.M)
        return any(pattern.search(src) for src in sources)
    return any(absent in src for src in sources)


# ---- ml_notebooks ----------------------------------------------------------------------------


def test_notebooks_are_valid_nbformat4() -> None:
    nbs = notebooks()
    assert len(nbs) >= 60
    for nb_id, nb in nbs.items():
        assert nb.nbformat == 4, nb_id
        nbformat.validate(nb)
        assert 8 <= len(nb.cells) <= 40, (nb_id, len(nb.cells))
        assert any(c.cell_type == "code" for c in nb.cells), nb_id


def test_recipes_cover_every_notebook() -> None:
    assert set(recipes()) == set(notebooks())
    domains = Counter(r["domain"] for r in recipes().values())
    tasks = Counter(r["task_type"] for r in recipes().values())
    assert len(domains) >= 12
    assert set(tasks) == {"classification", "regression", "forecasting"}


def test_labels_cover_each_notebook_dimension_exactly_once() -> None:
    keys = Counter((lab["item_id"], lab["dimension"]) for lab in labels())
    assert set(keys.values()) == {1}
    assert set(keys) == {(nb, dim) for nb in notebooks() for dim in DIMENSIONS}


def test_labels_are_well_formed() -> None:
    dims = {d["id"]: d for d in rubric("ml_notebook")["dimensions"]}
    assert set(dims) == set(DIMENSIONS)
    for lab in labels():
        assert lab["rater"] == "reference"
        assert lab["inputs"]["notebook"] == {"path": f"notebooks/{lab['item_id']}.ipynb"}
        assert (ML / lab["inputs"]["notebook"]["path"]).is_file()
        assert lab["inputs"]["task"].strip()
        assert lab["rationale"].strip()
        if lab["score"] == "N/A":
            assert "na" in dims[lab["dimension"]], lab
        else:
            assert lab["score"] in (1, 2, 3), lab


def test_every_label_follows_its_recipe() -> None:
    nbs = notebooks()
    for lab in labels():
        recipe = recipes()[lab["item_id"]]
        entry = recipe["dimensions"][lab["dimension"]]
        where = (lab["item_id"], lab["dimension"], entry["variant"])
        assert lab["score"] == entry["score"], where
        assert lab["inputs"]["task"] == recipe["task"], where
        sources = _sources(nbs[lab["item_id"]])
        cited = entry["cells"]
        assert all(1 <= n <= len(sources) for n in cited), where
        if entry["marker"] is not None:
            # the variant's key code is in one of the cells the rationale cites
            assert any(entry["marker"] in sources[n - 1] for n in cited), where
        if entry.get("absent"):
            assert not _absent_found(entry["absent"], sources), where
        mentioned = _cited_numbers(lab["rationale"])
        assert mentioned <= set(range(1, len(sources) + 1)), where
        if cited:
            assert mentioned & set(cited), where


def test_each_dimension_has_a_spread_of_scores() -> None:
    for dim in DIMENSIONS:
        scores = Counter(str(lab["score"]) for lab in labels() if lab["dimension"] == dim)
        assert len(scores) >= 2, (dim, scores)
    overall = Counter(str(lab["score"]) for lab in labels())
    assert overall["1"] and overall["2"] and overall["3"] and overall["N/A"]


def test_no_two_notebooks_share_half_their_code_cells() -> None:
    code = {nb_id: {c.source for c in nb.cells if c.cell_type == "code"}
            for nb_id, nb in notebooks().items()}
    for a, b in itertools.combinations(sorted(code), 2):
        shared = len(code[a] & code[b])
        assert shared <= 0.5 * min(len(code[a]), len(code[b])), (a, b, shared)


def test_notebooks_fit_a_small_context() -> None:
    def rendered(nb: nbformat.NotebookNode) -> str:
        return "\n\n".join(f"# [cell {i}, {c.cell_type}]\n{c.source.rstrip()}"
                           for i, c in enumerate(nb.cells, start=1))

    tokens = [len(rendered(nb)) / 4 for nb in notebooks().values()]
    assert statistics.median(tokens) < 3000
    assert max(tokens) < 6000


def test_committed_files_equal_a_fresh_build() -> None:
    # exec the script's source (no bytecode cache left next to it)
    module = types.ModuleType("ml_notebooks_build")
    module.__file__ = str(BUILD)
    sys.modules[module.__name__] = module  # dataclasses look their module up while it loads
    try:
        exec(compile(BUILD.read_text(encoding="utf-8"), str(BUILD), "exec"), module.__dict__)
    finally:
        sys.modules.pop(module.__name__, None)
    files = module.write_all(ML)
    on_disk = {str(p.relative_to(ML)) for p in (ML / "notebooks").glob("*.ipynb")}
    assert on_disk == {name for name in files if name.startswith("notebooks/")}
    for name, text in files.items():
        assert (ML / name).read_text(encoding="utf-8") == text, f"{name} is stale: rerun {BUILD}"


def test_dataset_card_exists() -> None:
    card = (ML / "DATASET.md").read_text(encoding="utf-8")
    assert "not a survey of human raters" in card


# ---- rubrics -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,scale", [("ml_notebook", [1, 2, 3]),
                                        ("code_usefulness", [0, 1, 2, 3, 4])])
def test_rubrics_describe_every_level(name: str, scale: list[int]) -> None:
    data = rubric(name)
    assert data["name"] == name
    assert data["scale"] == scale
    for dim in data["dimensions"]:
        assert {int(k) for k in dim["levels"]} == set(scale), dim["id"]
        assert all(v.strip() for v in dim["levels"].values())


# ---- conala --------------------------------------------------------------------------------


def test_conala_labels() -> None:
    rows = _jsonl(CONALA / "labels.jsonl")
    assert len(rows) == 12468
    items: dict[str, dict] = {}
    for row in rows:
        assert re.fullmatch(r"conala-\d{4}-(baseline|tranx-annot|best-tranx|"
                            r"best-tranx-rerank|codex|snippet)", row["item_id"]), row["item_id"]
        assert set(row["inputs"]) == {"intent", "snippet"}
        assert row["inputs"]["intent"].strip() and row["inputs"]["snippet"].strip()
        assert row["dimension"] == "usefulness"
        assert row["score"] in (0, 1, 2, 3, 4)
        assert row["rater"].startswith("grader")
        assert isinstance(row["reference"], list) and row["reference"]
        # one item, one content
        assert items.setdefault(row["item_id"], row["inputs"]) == row["inputs"]
    assert len(items) == 2830
    raters = Counter((row["item_id"], row["rater"]) for row in rows)
    assert max(raters.values()) == 1
    assert "Apache License" in (CONALA / "LICENSE").read_text(encoding="utf-8")
    assert "Apache" in (CONALA / "DATASET.md").read_text(encoding="utf-8")
