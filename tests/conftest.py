"""Shared fixtures: offline, deterministic, no DSPy cache, scripted LMs, a tiny rubric."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(autouse=True, scope="session")
def _no_dspy_cache(tmp_path_factory):
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    os.environ["JUDGEALIGN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(autouse=True)
def _clean_dspy_settings(monkeypatch, tmp_path):
    import dspy

    monkeypatch.chdir(tmp_path)  # no stray judgealign.toml or mlflow.db from the repo
    for key in list(os.environ):
        if key.startswith("JUDGEALIGN_") and key != "JUDGEALIGN_CACHE_DIR":
            monkeypatch.delenv(key)
    with dspy.context(lm=None):
        yield


@pytest.fixture
def tiny_rubric():
    from judgealign.signatures.rubric import rubric_from_dict
    from judgealign.testing import TINY_RUBRIC

    return rubric_from_dict(TINY_RUBRIC)


@pytest.fixture
def notebook_file(tmp_path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Flight delays\nPredict delays."),
        nbformat.v4.new_code_cell("import pandas as pd\ndf = pd.read_csv('flights.csv')"),
        nbformat.v4.new_code_cell("df.isna().sum()"),
    ]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="dep_delay    12\n")]
    nbformat.validate(nb)
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path
