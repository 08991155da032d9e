"""README.md's "In MLflow and on Spark" blocks, run as written.

Each block is marked ``<!-- test: NAME -->`` right before its fence. The blocks run in a
workspace holding what they name (a saved ``ml_notebook`` judge at ``judges/notebooks-v1``,
``labels.jsonl``, ``test_labels.jsonl``, ``notebooks/nb-001.ipynb``), with the LM configured the
way a user would: ``JUDGEALIGN_LM__*`` environment variables, here pointing at an
OpenAI-compatible fake LM on 127.0.0.1; MLflow uses a SQLite store in the workspace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from judgealign.testing import FakeOpenAIServer, scripted_lm

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\s*```(\w+)\n(.*?)```", re.S)
KEY_VAR = "JUDGEALIGN_README_TEST_KEY"
DIMS = ("model_training", "data_imputation")


def readme_blocks() -> dict[str, tuple[str, str]]:
    """name -> (language, code) of every marked block of README.md."""
    return {m[1]: (m[2], m[3]) for m in BLOCK.finditer(README.read_text(encoding="utf-8"))}


def respond(prompt: str) -> dict[str, str]:
    return {"score": "2", "rationale": "the fake judge reads a sound notebook"}


def _notebook(cells: list[str]) -> str:
    return "\n".join(f"# [cell {i}, code]\n{src}" for i, src in enumerate(cells, start=1))


ITEMS = {  # item -> (notebook text, model_training, data_imputation)
    "nb-t1": (_notebook(["model.fit(X_train, y_train)", "model.score(X_test, y_test)"]), 3, 3),
    "nb-t2": (_notebook(["model.fit(X, y)", "print(model.score(X, y))"]), 1, 2),
    "nb-t3": (_notebook(["df = df.fillna(df.mean())", "model.fit(X, y)"]), 1, 1),
    "nb-e1": (_notebook(["model.fit(X_train, y_train)", "print(model.score(X_val, y_val))"]),
              3, 2),
    "nb-e2": (_notebook(["df.dropna()", "model.fit(X, y)"]), 1, 1),
}


def _label_rows(ids: list[str]) -> list[dict[str, Any]]:
    rows = []
    for item_id in ids:
        text, training, imputation = ITEMS[item_id]
        for dim, score in zip(DIMS, (training, imputation), strict=True):
            rows.append({"item_id": item_id, "inputs": {"notebook": text, "task": "Predict"},
                         "dimension": dim, "score": score, "rationale": f"expert on {item_id}"})
    return rows


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(respond) as srv:
        yield srv


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """What the README blocks name, built once (aligning needs no LM server: scripted)."""
    import nbformat

    import judgealign
    from judgealign.config import load_config
    from judgealign.program import RubricJudge

    ws = tmp_path_factory.mktemp("readme")
    train, test = _label_rows(["nb-t1", "nb-t2", "nb-t3"]), _label_rows(["nb-e1", "nb-e2"])
    for name, rows in (("labels.jsonl", train), ("test_labels.jsonl", test)):
        (ws / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = load_config(path=None, overrides={"memory": {"semantic": False}})
    judge = judgealign.align(RubricJudge("ml_notebook", lm=scripted_lm(respond)),
                             ws / "labels.jsonl", config=settings)
    judge.save(ws / "judges" / "notebooks-v1")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Flight delays"),
                nbformat.v4.new_code_cell("model.fit(X_train, y_train)")]
    (ws / "notebooks").mkdir()
    (ws / "notebooks" / "nb-001.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    return ws


@pytest.fixture
def user_env(workspace, server, monkeypatch) -> dict[str, str]:
    """The README's working directory and a user's configuration, as environment variables."""
    import mlflow

    monkeypatch.chdir(workspace)
    uri = f"sqlite:///{workspace}/mlflow.db"
    env = {"JUDGEALIGN_LM__MODEL": "openai/fake", "JUDGEALIGN_LM__API_BASE": server.api_base,
           "JUDGEALIGN_LM__API_KEY_ENV": KEY_VAR, "JUDGEALIGN_LM__CACHE": "false",
           "JUDGEALIGN_LM__NUM_RETRIES": "0", "JUDGEALIGN_TRACKING__URI": uri,
           "MLFLOW_TRACKING_URI": uri, KEY_VAR: "sk-readme"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(uri)
    yield env
    mlflow.set_tracking_uri(None)


def run_python(name: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    lang, code = readme_blocks()[name]
    assert lang == "python"
    namespace = dict(namespace or {})
    exec(compile(code, f"README.md <!-- test: {name} -->", "exec"), namespace)
    return namespace


def test_readme_marks_one_block_per_entry_point():
    assert set(readme_blocks()) >= {"mlflow-scorer", "mlflow-evaluate-cli", "mlflow-evaluate",
                                    "mlflow-spark"}


def test_scorer_then_evaluate_round_trip_inside_mlflow(user_env, workspace, server):
    import mlflow
    from mlflow.entities import AssessmentSource

    calls = len(server.requests)
    ns = run_python("mlflow-scorer")
    assert ns["results"].metrics["ml_notebook/model_training/mean"] == pytest.approx(2.0)
    assert len(server.requests) - calls == 9  # one judgment per dimension of the rubric
    traces = mlflow.search_traces(run_id=ns["results"].run_id, return_type="list")
    assert {a.name for a in traces[0].info.assessments} >= {f"ml_notebook/{d}" for d in DIMS}

    # An expert reviews the trace in MLflow: feedback named after a dimension.
    mlflow.log_feedback(trace_id=traces[0].info.trace_id, name="model_training", value=3,
                        rationale="validation split used",
                        source=AssessmentSource(source_type="HUMAN", source_id="alice"))

    lang, code = readme_blocks()["mlflow-evaluate-cli"]
    assert lang == "bash"
    bin_dir = str(Path(sys.executable).parent)
    proc = subprocess.run(["bash", "-euc", code], capture_output=True, text=True,
                          cwd=workspace, timeout=300,
                          env={**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    report = json.loads((workspace / "reports" / "eval-v1" / "evaluation.json").read_text())
    mae = {(d["predictor"], d["dimension"]): d["mae"] for d in
           report["dimensions"] + report["references"]}
    assert mae[("judge", "model_training")] == pytest.approx(1.0)  # answers 2; humans 3 and 1
    assert ("constant", "data_imputation") in mae

    ns = run_python("mlflow-evaluate")
    result = ns["result"]  # the second one: the traces' human assessments
    assert "notebook-agent" in result.labels and result.n_items == 1
    (judgment,) = result.judgments
    assert (judgment.dimension, judgment.human, judgment.judge) == ("model_training", 3, 2)


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    if os.environ.get("JUDGEALIGN_REQUIRE_SPARK") != "1":
        pytest.importorskip("pyspark")
        if not shutil.which("java"):
            pytest.skip("Spark needs a Java runtime")
    from pyspark.sql import SparkSession

    # The key reaches the executors the way it would on a cluster: executor environment.
    session = (SparkSession.builder.master("local[2]").appName("judgealign-readme")
               .config("spark.ui.enabled", "false")
               # Module fixtures start before the per-test chdir: keep tables out of the repo.
               .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
               .config(f"spark.executorEnv.{KEY_VAR}", "sk-readme")
               .getOrCreate())
    yield session
    session.stop()


def test_spark_block(spark, user_env, workspace, server):
    frame = spark.createDataFrame(
        [(f"run-{i}", text, "Predict") for i, (text, _, _) in enumerate(ITEMS.values())],
        "run_id string, notebook string, task string")
    frame.createOrReplaceTempView("agent_runs")
    run_python("mlflow-spark", {"spark": spark})
    rows = spark.table("agent_runs_scored").collect()
    assert len(rows) == len(ITEMS)
    assert {r["model_training"] for r in rows} == {"2"}
    assert {r["data_imputation_rationale"] for r in rows} == {
        "the fake judge reads a sound notebook"}
