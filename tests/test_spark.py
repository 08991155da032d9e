"""Batch scoring on Spark (``local[2]``): the judge's pyfunc model in ``spark_udf``, each
executor building its LM from the configuration sent with the UDF, against an
OpenAI-compatible fake LM served on 127.0.0.1 by this test.

Needs pyspark (the ``spark`` extra) and a Java runtime. Without them the module is skipped,
unless ``JUDGEALIGN_REQUIRE_SPARK=1`` (``.ci/run`` sets it): then it fails, so CI cannot skip
it silently.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from judgealign.adapter import judged_text
from judgealign.testing import FakeOpenAIServer, dimension_of, scripted_lm

if os.environ.get("JUDGEALIGN_REQUIRE_SPARK") == "1":
    import pyspark  # noqa: F401 -- an ImportError here fails the run, as it should

    assert shutil.which("java"), "JUDGEALIGN_REQUIRE_SPARK=1 but no java on PATH"
else:
    pytest.importorskip("pyspark")
    if not shutil.which("java"):
        pytest.skip("Spark needs a Java runtime", allow_module_level=True)

KEY_VAR = "JUDGEALIGN_TEST_FAKE_KEY"  # set on the executors only, through the UDF's env


def respond(prompt: str) -> dict[str, Any] | str:
    text = judged_text(prompt, "answer")  # the judged item, not the demos
    if "gibberish" in text:
        return "this is not JSON"
    score = "3" if "Paris" in text else "1"
    return {"score": score, "rationale": f"fake LM on {dimension_of(prompt)}"}


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("judgealign-test")
               .config("spark.ui.enabled", "false")
               # Module fixtures start before the per-test chdir: keep tables out of the repo.
               .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
               .config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(respond) as srv:
        yield srv


@pytest.fixture
def judge_dir(tiny_rubric, tmp_path):
    """A judge with episodic memory (the executors open its Chroma index), saved."""
    import judgealign
    from judgealign.config import load_config
    from judgealign.program import RubricJudge

    rows = [{"item_id": "t1", "inputs": {"answer": "Paris is the capital"},
             "dimension": "correctness", "score": 3, "rationale": "right"},
            {"item_id": "t2", "inputs": {"answer": "Lyon"}, "dimension": "correctness",
             "score": 1, "rationale": "wrong"}]
    settings = load_config(overrides={"memory": {"semantic": False}})
    judge = judgealign.align(RubricJudge(tiny_rubric, lm=scripted_lm(respond)), rows,
                             config=settings)
    return judge.save(tmp_path / "judge")


def _lm(server: FakeOpenAIServer) -> dict[str, Any]:
    return {"model": "openai/fake", "api_base": server.api_base, "api_key_env": KEY_VAR,
            "cache": False, "num_retries": 0}


def test_spark_scores_a_saved_judge_in_local_mode(spark, server, judge_dir, monkeypatch):
    from judgealign.spark import score

    monkeypatch.delenv(KEY_VAR, raising=False)  # the driver has no key: only the UDF's env
    df = spark.createDataFrame(
        [("a", "Paris is the capital of France", "Capital?"), ("b", "Lyon", None),
         ("c", "gibberish", "Capital?"), ("d", "Paris", "Which city?")],
        "id string, response string, question string")
    before = len(server.requests)
    scored = score(df, judge_dir, columns={"answer": "response"}, item_id="id",
                   lm=_lm(server), env={KEY_VAR: "sk-test"}, num_threads=2)
    assert scored.columns == ["id", "response", "question", "correctness",
                              "correctness_rationale", "clarity", "clarity_rationale"]
    rows = {r["id"]: r.asDict() for r in scored.collect()}

    assert rows["a"]["correctness"] == "3" and rows["a"]["clarity"] == "3"
    assert rows["a"]["correctness_rationale"] == "fake LM on Correctness"
    assert rows["b"]["correctness"] == "1" and rows["b"]["question"] is None
    assert rows["c"]["correctness"] == "FAILED" and rows["c"]["clarity"] == "FAILED"
    assert "this is not JSON" in rows["c"]["correctness_rationale"]
    assert rows["d"]["correctness"] == "3"
    calls = server.requests[before:]
    # 3 rows x 2 dimensions, plus 2 attempts for each of the failing row's 2 dimensions.
    assert len(calls) == 3 * 2 + 2 * 2
    assert {c["model"] for c in calls} == {"fake"}


def test_spark_scores_a_registered_model(spark, server, judge_dir, tmp_path, monkeypatch):
    import mlflow

    from judgealign.config import load_config
    from judgealign.spark import score
    from judgealign.tracking import log_judge_model

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = load_config(overrides={"tracking": {"uri": uri, "experiment": "spark"}})
    try:
        model_uri = log_judge_model(judge_dir, registered_model_name="tiny-spark",
                                    settings=settings)
        assert model_uri.startswith("models:/")
        df = spark.createDataFrame([("Paris",), ("Nice",)], "answer string")
        scored = score(df, "models:/tiny-spark/1", lm=_lm(server), env={KEY_VAR: "sk-test"},
                       prefix="judge_")
        got = sorted((r["answer"], r["judge_correctness"]) for r in scored.collect())
    finally:
        mlflow.set_tracking_uri(None)
    assert got == [("Nice", "1"), ("Paris", "3")]
    assert "judge_clarity_rationale" in scored.columns


def test_spark_checks_columns_and_lm_before_any_job(spark, judge_dir):
    from judgealign.errors import ConfigError
    from judgealign.spark import lm_env, score

    df = spark.createDataFrame([("x",)], "text string")
    with pytest.raises(ConfigError, match=r"no column 'answer' for the rubric input 'answer'"):
        score(df, judge_dir)
    with pytest.raises(ConfigError, match=r"\['notebook'\] are not inputs"):
        score(df, judge_dir, columns={"notebook": "text"})
    with pytest.raises(ConfigError, match="temperature"):
        lm_env({"model": "openai/x", "temperature": 9})
    assert lm_env("openai/gpt-4.1-mini") == {"JUDGEALIGN_LM__MODEL": "openai/gpt-4.1-mini"}
    assert lm_env({"model": "openai/x", "cache": False}) == {
        "JUDGEALIGN_LM__MODEL": "openai/x", "JUDGEALIGN_LM__CACHE": "false"}
