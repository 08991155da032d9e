"""MLflow tracking: alignment and CV runs, the judge as a pyfunc model, labels from traces.

Everything runs against a sqlite store and file artifacts under the test's tmp dir; nothing
touches the network.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from judgealign.testing import scripted_lm


def _respond(prompt: str) -> dict[str, Any]:
    if "existing_guidelines" in prompt:  # MemAlign's reflection call
        return {"guidelines": [{"text": "An answer naming the right city is right.",
                                "sources": ["E1"]}]}
    return {"score": "2", "rationale": "partly"}


ROWS = [
    {"item_id": "i1", "inputs": {"answer": "Paris is the capital of France"},
     "dimension": "correctness", "score": 3, "rationale": "names the right city"},
    {"item_id": "i2", "inputs": {"answer": "Lyon"}, "dimension": "correctness", "score": 1,
     "rationale": "wrong city"},
    {"item_id": "i1", "inputs": {"answer": "Paris is the capital of France"},
     "dimension": "clarity", "score": 3, "rationale": "one crisp sentence"},
]


@pytest.fixture(scope="module")
def _migrated_db(tmp_path_factory) -> Path:
    """An empty, migrated MLflow sqlite store: creating one takes seconds, copying it none."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking(_migrated_db, tmp_path, monkeypatch):
    """A fresh sqlite tracking store of this test's own; MLflow's fluent state points at it.

    Artifacts of new experiments go to ./mlruns, i.e. under tmp_path (conftest chdirs there).
    """
    import mlflow

    shutil.copy(_migrated_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def settings(tracking):
    from judgealign.config import load_config

    return load_config(overrides={"tracking": {"enabled": True, "uri": tracking,
                                               "experiment": "judgealign-test"}})


@pytest.fixture
def aligned(tiny_rubric):
    from judgealign import align
    from judgealign.labels import LabelSet
    from judgealign.program import RubricJudge

    labels = LabelSet.from_records(ROWS, rubric=tiny_rubric)
    judge = align(RubricJudge(tiny_rubric, lm=scripted_lm(_respond)), labels)
    return judge, labels


def _under(path: Path, root: Path) -> bool:
    return str(path.resolve()).startswith(str(root.resolve()))


# --- log_alignment -------------------------------------------------------------------------

def test_log_alignment_params_metrics_and_artifacts(aligned, settings, tmp_path):
    from mlflow import MlflowClient

    from judgealign import load
    from judgealign.tracking import KIND_TAG, log_alignment

    judge, labels = aligned
    run_id = log_alignment(judge, settings, labels=labels)

    client = MlflowClient(tracking_uri=settings.tracking.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "judgealign-test"
    assert run.data.tags[KIND_TAG] == "alignment"
    params, metrics = run.data.params, run.data.metrics
    assert params["rubric"] == "tiny" and params["optimizer"] == "MemAlign"
    assert params["lm.model"] == "scripted/test"
    assert params["embedder.kind"] == "hashing"
    assert params["memory.k"] == "3" and params["memory.semantic"] == "true"
    assert params["labels.correctness"] == "2" and params["labels.clarity"] == "1"
    assert params["label_rows"] == "3" and params["label_items"] == "2"
    assert metrics["guidelines_kept/correctness"] == 1.0
    assert metrics["guidelines_rejected/correctness"] == 0.0
    assert metrics["episodes/correctness"] == 2.0 and metrics["episodes/clarity"] == 1.0
    report = judge.report.to_dict()
    assert metrics["cost/lm_calls"] == report["lm_calls"] > 0
    assert metrics["cost/prompt_tokens"] == report["prompt_tokens"] > 0
    assert metrics["cost/completion_tokens"] == report["completion_tokens"] > 0
    clarity = next(d for d in report["dimensions"] if d["dimension"] == "clarity")
    assert "cost/seconds" in metrics
    assert metrics["compile/lm_calls/clarity"] == clarity["lm_calls"] > 0

    names = {f.path for f in client.list_artifacts(run_id)}
    assert {"judge", "alignment_report.json", "settings.json"} <= names
    judge_files = {f.path for f in client.list_artifacts(run_id, "judge")}
    assert {"judge/judge.json", "judge/program.json", "judge/memory"} <= judge_files
    # The logged directory is a judge that loads and verifies.
    local = Path(client.download_artifacts(run_id, "judge", str(tmp_path / "dl")))
    assert _under(Path(run.info.artifact_uri.removeprefix("file://")), tmp_path)
    back = load(local, lm=scripted_lm(_respond))
    assert [g.text for g in back.judges["correctness"].guidelines] == \
        [g.text for g in judge.judges["correctness"].guidelines]


def test_log_alignment_of_a_loaded_judge_uses_the_saved_report(aligned, settings, tmp_path):
    from mlflow import MlflowClient

    from judgealign import load
    from judgealign.artifacts import save
    from judgealign.tracking import log_alignment

    judge, _ = aligned
    saved = save(judge, tmp_path / "j")
    loaded = load(saved, lm=scripted_lm(_respond))
    assert loaded.report == json.loads(json.dumps(judge.report.to_dict()))  # state carries it
    run_id = log_alignment(loaded, settings, artifact_dir=saved)
    run = MlflowClient(tracking_uri=settings.tracking.uri).get_run(run_id)
    assert run.data.metrics["cost/lm_calls"] == judge.report.lm_calls
    assert run.data.params["optimizer"] == "MemAlign"
    assert "label_rows" not in run.data.params  # no labels given: no counts


# --- log_cv --------------------------------------------------------------------------------

class FakeCV:
    """Shaped like ``CVResult.to_dict()`` (evaluation/crossval.py), with an awkward variant
    name, gaps (None where a metric is undefined) and per-fold detail that is no metric."""

    def to_dict(self) -> dict[str, Any]:
        var = "memalign (k=3)"
        return {
            "settings": {"rubric": "tiny", "folds": 5, "seed": 0, "variants": ["baseline", var],
                         "memory": {"k": 3}},
            "folds": {"i1": 0, "i2": 1},
            "dimensions": ["correctness", "clarity"],
            "variants": ["baseline", var],
            "skipped": {},
            "data": {"items": 2, "labels": 3},
            "agreement": [
                {"variant": "baseline", "dimension": "correctness", "n_items": 2,
                 "n_failed": 0, "mae": 0.8, "exact": 0.4, "qwk": 0.1, "spearman": 0.2},
                {"variant": "baseline", "dimension": "clarity", "mae": 0.5, "exact": 0.5,
                 "qwk": None, "spearman": None},
                {"variant": var, "dimension": "correctness", "mae": 0.3, "exact": 0.7,
                 "qwk": 0.6, "spearman": 0.5},
            ],
            "mae": [{"variant": var, "dimension": "correctness", "mae": 0.3, "ci_low": 0.1,
                     "ci_high": 0.5, "n": 2, "confidence": 0.95}],
            "comparisons": [
                {"variant": var, "reference": "baseline", "dimension": "correctness",
                 "mae_a": 0.8, "mae_b": 0.3, "diff": -0.5, "ci_low": -0.9, "ci_high": -0.1,
                 "significant": True, "relative_reduction": 0.625},
                {"variant": var, "reference": "baseline", "dimension": "clarity",
                 "diff": None},
            ],
            "costs": [{"fold": 0, "variant": var, "align_calls": 2, "n": 7}],
            "cost_totals": {var: {"align_calls": 4, "judge_prompt_tokens": 900}},
            "align_reports": [{"variant": var, "fold": 0, "report": {"mae": 1.0}}],
            "records": [{"item_id": "i1", "mae": 9.0}],
        }


def test_log_cv_sanitises_metric_names_and_logs_the_report_files(settings, tmp_path):
    from mlflow import MlflowClient

    from judgealign.tracking import KIND_TAG, log_cv

    out = tmp_path / "cv"
    out.mkdir()
    (out / "report.md").write_text("# CV\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(FakeCV().to_dict()), encoding="utf-8")
    (out / "mae.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (out / "scratch.bin").write_bytes(b"\0")  # not a report file

    run_id = log_cv(FakeCV(), out, settings)
    client = MlflowClient(tracking_uri=settings.tracking.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[KIND_TAG] == "cv"
    var = "memalign _k_3_"
    assert run.data.metrics == {
        "agreement/baseline/correctness/n_items": 2.0,
        "agreement/baseline/correctness/n_failed": 0.0,
        "agreement/baseline/correctness/mae": 0.8,
        "agreement/baseline/correctness/exact": 0.4,
        "agreement/baseline/correctness/qwk": 0.1,
        "agreement/baseline/correctness/spearman": 0.2,
        "agreement/baseline/clarity/mae": 0.5,  # qwk and spearman None: not logged
        "agreement/baseline/clarity/exact": 0.5,
        f"agreement/{var}/correctness/mae": 0.3,
        f"agreement/{var}/correctness/exact": 0.7,
        f"agreement/{var}/correctness/qwk": 0.6,
        f"agreement/{var}/correctness/spearman": 0.5,
        f"mae/{var}/correctness/mae": 0.3,
        f"mae/{var}/correctness/ci_low": 0.1,
        f"mae/{var}/correctness/ci_high": 0.5,
        f"mae/{var}/correctness/n": 2.0,
        f"comparisons/{var}_vs_baseline/correctness/mae_a": 0.8,
        f"comparisons/{var}_vs_baseline/correctness/mae_b": 0.3,
        f"comparisons/{var}_vs_baseline/correctness/diff": -0.5,
        f"comparisons/{var}_vs_baseline/correctness/ci_low": -0.9,
        f"comparisons/{var}_vs_baseline/correctness/ci_high": -0.1,
        f"comparisons/{var}_vs_baseline/correctness/relative_reduction": 0.625,
        f"cost_totals/{var}/align_calls": 4.0,
        f"cost_totals/{var}/judge_prompt_tokens": 900.0,
    }
    params = run.data.params
    assert params["rubric"] == "tiny" and params["folds"] == "5"
    assert params["memory.k"] == "3"
    assert json.loads(params["variants"]) == ["baseline", "memalign (k=3)"]
    names = {f.path for f in client.list_artifacts(run_id)}
    assert names == {"report.md", "results.json", "mae.png"}


def test_log_cv_without_files_writes_results_json(settings, tmp_path):
    from mlflow import MlflowClient

    from judgealign.tracking import log_cv

    class Minimal:
        def to_dict(self) -> dict[str, Any]:
            return {"mae": {"correctness": 0.25, "clarity": math.nan}, "note": None}

    run_id = log_cv(Minimal(), tmp_path / "missing", settings)
    client = MlflowClient(tracking_uri=settings.tracking.uri)
    assert client.get_run(run_id).data.metrics == {"mae/correctness": 0.25}
    assert {f.path for f in client.list_artifacts(run_id)} == {"results.json"}


def test_metric_key_is_accepted_by_mlflow():
    from judgealign.tracking import _metric_key

    assert _metric_key("a/b c (k=3)/mae") == "a/b c _k_3_/mae"
    assert _metric_key("../x//./y") == "_/x/_/y"
    assert _metric_key("") == "_"
    assert len(_metric_key("x" * 400)) == 250


# --- the judge as a pyfunc model -----------------------------------------------------------

SERVE_SCRIPT = textwrap.dedent("""
    import json, sys
    import dspy, mlflow, pandas as pd
    from judgealign.testing import scripted_lm

    dspy.configure(lm=scripted_lm(lambda p: {"score": "1", "rationale": "served"}))
    model = mlflow.pyfunc.load_model(sys.argv[1])
    frame = pd.DataFrame({"answer": ["Paris", "Lyon"], "item_id": ["a", "b"]})
    print(model.predict(frame).to_json(orient="records"))
""")


def test_pyfunc_model_registers_and_serves_in_a_fresh_process(aligned, settings, tmp_path):
    from judgealign.artifacts import save
    from judgealign.tracking import log_judge_model

    judge, _ = aligned
    judge_dir = save(judge, tmp_path / "judge")
    uri = log_judge_model(judge_dir, registered_model_name="tiny-judge", settings=settings)
    assert uri.startswith("models:/")

    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGEALIGN_LM")}
    env["MLFLOW_TRACKING_URI"] = settings.tracking.uri
    out = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, "models:/tiny-judge/1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert rows == [{"correctness": "1", "correctness_rationale": "served",
                     "clarity": "1", "clarity_rationale": "served"}] * 2


def test_pyfunc_predict_in_process(aligned, tmp_path):
    import pandas as pd

    from judgealign.artifacts import save
    from judgealign.serving import JUDGE_ARTIFACT, JudgePyfunc

    judge, _ = aligned
    judge_dir = save(judge, tmp_path / "judge")

    class Context:
        artifacts = {JUDGE_ARTIFACT: str(judge_dir)}

    def respond(prompt: str) -> dict[str, Any] | str:
        return "not json" if "Clarity" in prompt else {"score": "N/A", "rationale": "n"}

    import dspy

    model = JudgePyfunc()
    with dspy.context(lm=scripted_lm(respond)):
        model.load_context(Context())
    frame = pd.DataFrame({"answer": ["x", "y"], "question": ["q", None]})
    result = model.predict(None, frame)
    assert list(result.columns) == ["correctness", "correctness_rationale", "clarity",
                                    "clarity_rationale"]
    assert list(result["correctness"]) == ["FAILED", "FAILED"]  # N/A not allowed there
    assert "score" in result["correctness_rationale"][0]  # the error says what went wrong
    assert list(result["clarity"]) == ["FAILED", "FAILED"]
    assert model.predict(None, frame.iloc[:0]).empty


def test_choose_lm_config_wins_over_dspy(monkeypatch):
    import dspy

    from judgealign.config import load_config
    from judgealign.serving import choose_lm

    lm = scripted_lm(_respond)
    with dspy.context(lm=lm):
        assert choose_lm(load_config()) is lm
        monkeypatch.setenv("JUDGEALIGN_LM__MODEL", "openai/gpt-4.1-mini")
        assert choose_lm(load_config()) is None  # load() builds the configured LM
    monkeypatch.delenv("JUDGEALIGN_LM__MODEL")
    assert choose_lm(load_config()) is None  # nothing anywhere: the default LM


# --- labels from MLflow traces ---------------------------------------------------------------

def test_labels_from_mlflow_traces(tracking, tiny_rubric):
    import mlflow
    from mlflow.entities import AssessmentSource

    from judgealign.labels import LabelSet

    mlflow.set_experiment("labelling")

    @mlflow.trace
    def answer_question(answer: str, question: str | None = None) -> str:
        return "judged"

    answer_question("Paris is the capital", question="Capital of France?")
    paris = mlflow.get_last_active_trace_id()
    with mlflow.start_span("answer") as span:
        span.set_inputs({"answer": "Lyon", "question": None})
        span.set_outputs("judged")
    lyon = span.trace_id

    alice = AssessmentSource(source_type="HUMAN", source_id="alice")
    mlflow.log_feedback(trace_id=paris, name="correctness", value=3, rationale="right city",
                        source=alice)
    first = mlflow.log_feedback(trace_id=lyon, name="Correctness", value=2, rationale="meh",
                                source=alice)
    mlflow.override_feedback(trace_id=lyon, assessment_id=first.assessment_id, value=1,
                             rationale="wrong city", source=alice)
    mlflow.log_feedback(trace_id=lyon, name="clarity", value="N/A", source=alice)
    # Not labels: an LLM judge, an unknown name, a failed human assessment.
    mlflow.log_feedback(trace_id=lyon, name="correctness", value=3,
                        source=AssessmentSource(source_type="LLM_JUDGE", source_id="gpt"))
    mlflow.log_feedback(trace_id=paris, name="tone", value=1, source=alice)
    mlflow.log_feedback(trace_id=paris, name="clarity", error=ValueError("timeout"),
                        source=AssessmentSource(source_type="HUMAN", source_id="bob"))
    # A human expectation (MLflow's ground truth) named after a dimension is a label too.
    mlflow.log_expectation(trace_id=paris, name="clarity", value=3,
                           source=AssessmentSource(source_type="HUMAN", source_id="carol"))

    traces = mlflow.search_traces(return_type="list")
    labels = LabelSet.from_mlflow_traces(traces, rubric=tiny_rubric)
    got = sorted((lab.item_id, lab.dimension, lab.score, lab.rationale, lab.rater)
                 for lab in labels)
    assert got == sorted([
        (paris, "correctness", 3, "right city", "alice"),
        (paris, "clarity", 3, "", "carol"),
        (lyon, "correctness", 1, "wrong city", "alice"),
        (lyon, "clarity", None, "", "alice"),
    ])
    items = labels.items()
    assert dict(items[paris]) == {"answer": "Paris is the capital",
                                  "question": "Capital of France?"}
    assert dict(items[lyon]) == {"answer": "Lyon"}
    assert labels.reference("correctness") == {paris: 3, lyon: 1}


def test_align_logs_a_run_when_tracking_is_enabled(tmp_path):
    import mlflow

    from judgealign import align
    from judgealign.config import load_config
    from judgealign.labels import LabelSet
    from judgealign.program import RubricJudge
    from judgealign.signatures.rubric import rubric_from_dict
    from judgealign.testing import TINY_RUBRIC, scripted_lm

    rubric = rubric_from_dict(TINY_RUBRIC)
    labels = LabelSet.from_records(
        [{"item_id": "i1", "inputs": {"answer": "a"}, "dimension": "correctness", "score": 2,
          "rationale": "r"}], rubric=rubric)
    uri = f"sqlite:///{tmp_path / 'align.db'}"
    settings = load_config(environ={}, overrides={"tracking": {"enabled": True, "uri": uri},
                                                  "memory": {"semantic": False}})
    align(RubricJudge(rubric, lm=scripted_lm(lambda p: {"score": "2", "rationale": "r"})),
          labels, config=settings)
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("judgealign").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["episodes/correctness"] == 1
