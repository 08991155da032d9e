"""Bundled labelled data sets, loadable in one line from an installed wheel.

    from judgealign.datasets import load_ml_notebooks, load_conala
    data = load_ml_notebooks()          # data.rubric, data.labels (a LabelSet), data.card

Each set ships with a card (``DATASET.md``) giving its origin, licence and how the labels
were made.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Dataset:
    """A bundled data set: its rubric, its validated labels, and the path of its card."""

    name: str
    rubric: Any
    labels: Any
    card: Path

    @property
    def items(self) -> dict[str, Any]:
        return self.labels.items()


def _root(name: str) -> Path:
    # Package data of a regular (not zipped) install is a real directory.
    return Path(str(resources.files("judgealign.datasets").joinpath(name)))


def _load(name: str, rubric_name: str) -> Dataset:
    from judgealign.labels import LabelSet
    from judgealign.signatures.rubric import load_builtin

    root = _root(name)
    rubric = load_builtin(rubric_name)
    labels = LabelSet.from_jsonl(root / "labels.jsonl", rubric=rubric)
    return Dataset(name, rubric, labels, root / "DATASET.md")


def load_ml_notebooks() -> Dataset:
    """Generated ML notebooks labelled on the nine ``ml_notebook`` dimensions (1-3, N/A)."""
    return _load("ml_notebooks", "ml_notebook")


def load_conala() -> Dataset:
    """CoNaLa intents with generated snippets and human usefulness grades (0-4, several raters
    per item; Apache-2.0, JetBrains-Research/codegen-metrics)."""
    return _load("conala", "code_usefulness")


__all__ = ["Dataset", "load_conala", "load_ml_notebooks"]
