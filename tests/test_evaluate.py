"""``judgealign evaluate`` / ``judgealign.evaluate``: a saved judge scored on a labelled set
without alignment, failures charged, references, confusion, disagreements, MLflow traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from judgealign.adapter import judged_text
from judgealign.testing import FakeOpenAIServer, dimension_of, scripted_lm


def _rows(spec: list[tuple[str, str, Any, Any]]) -> list[dict[str, Any]]:
    rows = []
    for item_id, answer, correctness, clarity in spec:
        for dim, score in (("correctness", correctness), ("clarity", clarity)):
            rows.append({"item_id": item_id, "inputs": {"answer": answer}, "dimension": dim,
                         "score": score, "rationale": f"expert on {item_id}"})
    return rows


TRAIN = _rows([("t1", "Paris is the capital of France", 3, 3),
               ("t2", "Lyon is the capital of France", 1, 2),
               ("t3", "Marseille is the capital of France", 1, 2)])
# The judge below answers: correctness 3 if "Paris" is in the answer else 1; clarity 2,
# except an answer naming Lyon, where its clarity answer is unparseable (a failed judgment).
TEST = _rows([("e1", "Paris is the capital", 3, 3),
              ("e2", "Marseille", 1, "N/A"),
              ("e3", "Paris, or maybe Lyon", 2, 1),
              ("e4", "Nice", 3, 2)])


def respond(prompt: str) -> dict[str, Any] | str:
    text = judged_text(prompt, "answer")  # the judged item, not the demos
    if dimension_of(prompt) == "Clarity":
        if "Lyon" in text:
            return "no JSON today"
        return {"score": "2", "rationale": "readable"}
    return {"score": "3" if "Paris" in text else "1", "rationale": "checked the city"}


@pytest.fixture
def judge_dir(tiny_rubric, tmp_path) -> Path:
    """A judge aligned (episodic memory only) on TRAIN, saved."""
    import judgealign
    from judgealign.config import load_config
    from judgealign.program import RubricJudge

    settings = load_config(overrides={"memory": {"semantic": False}})
    judge = judgealign.align(RubricJudge(tiny_rubric, lm=scripted_lm(respond)), TRAIN,
                             config=settings)
    return judge.save(tmp_path / "judge")


@pytest.fixture
def judge(judge_dir):
    import judgealign

    return judgealign.load(judge_dir, lm=scripted_lm(respond))


def test_evaluate_charges_failures_and_compares_with_references(judge):
    import judgealign

    result = judgealign.evaluate(judge, TEST, train=TRAIN, bootstrap=500)
    assert result.n_items == 4 and result.held_in_items == []

    cor = result.agreement_of("correctness")
    assert cor.mae == pytest.approx(0.75)  # |3-3| + |1-1| + |2-3| + |3-1|, over 4
    assert cor.exact == pytest.approx(0.5) and cor.n_failed == 0
    clar = result.agreement_of("clarity")
    # e1 |3-2| = 1; e2 human N/A, judge 2: the whole scale, 2; e3 failed on human 1: the
    # largest error a level could make there, 2; e4 exact: 0.
    assert clar.mae == pytest.approx(1.25)
    assert clar.n_failed == 1 and clar.n_na_confusion == 1
    assert clar.mae_scored == pytest.approx(0.5)  # over e1 and e4 only

    cm = next(d.confusion for d in result.dimensions if d.dimension == "clarity")
    assert cm.rows == ["1", "2", "3", "N/A"]
    assert cm.columns == ["1", "2", "3", "N/A", "FAILED"]
    assert cm.counts == [[0, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]

    worst = [(j.item_id, j.dimension, j.charge) for j in result.disagreements()]
    assert worst == [("e4", "correctness", 2.0), ("e2", "clarity", 2.0), ("e3", "clarity", 2.0),
                     ("e3", "correctness", 1.0), ("e1", "clarity", 1.0)]
    failed = next(j for j in result.disagreements() if j.failed)
    assert "AdapterParseError" in failed.rationale and failed.human_rationale == "expert on e3"

    # constant: the training median, 1 for correctness (3, 1, 1) and 2 for clarity (3, 2, 2).
    assert result.agreement_of("correctness", "constant").mae == pytest.approx(1.25)
    assert result.agreement_of("clarity", "constant").mae == pytest.approx(1.0)
    diffs = {(c.reference, c.dimension): c for c in result.comparisons}
    assert diffs[("constant", "correctness")].diff == pytest.approx(-0.5)
    assert diffs[("constant", "clarity")].diff == pytest.approx(0.25)
    versus_constant = diffs[("constant", "correctness")]
    assert versus_constant.ci_low <= -0.5 <= versus_constant.ci_high
    assert {"neighbours"} <= {c.reference for c in result.comparisons}


def test_neighbours_reference_uses_the_nearest_training_items(judge, tiny_rubric):
    from judgealign.evaluation.evaluate import reference_predictions
    from judgealign.labels import LabelSet

    train = LabelSet.from_records(TRAIN, rubric=tiny_rubric)
    embedder = judge.memory.embedder
    items = {"e1": {"answer": "Paris is the capital"}, "e2": {"answer": "Marseille capital"}}
    got = reference_predictions(train, "correctness", items, embedder=embedder, k=1)
    assert got["constant"] == {"e1": 1, "e2": 1}  # lower median of 3, 1, 1
    assert got["neighbours"] == {"e1": 3, "e2": 1}  # nearest: t1 (Paris), t3 (Marseille)
    # An evaluated training item is never predicted from its own label (3): both references
    # are fitted on the other training items (t2, t3: both 1).
    got = reference_predictions(train, "correctness", {"t1": {"answer": TRAIN[0]["inputs"][
        "answer"]}}, embedder=embedder, k=1)
    assert got == {"constant": {"t1": 1}, "neighbours": {"t1": 1}}


def test_items_the_judge_learnt_from_are_flagged(judge):
    import judgealign

    with pytest.warns(UserWarning, match="3 of the 3 evaluated items were used to align"):
        result = judgealign.evaluate(judge, TRAIN)
    assert result.held_in_items == ["t1", "t2", "t3"]
    assert all(j.held_in for j in result.judgments)
    assert "not held-out" in result.to_markdown()


def test_written_report_and_mlflow_run(judge, tmp_path):
    from mlflow import MlflowClient

    import judgealign
    from judgealign.config import load_config
    from judgealign.tracking import KIND_TAG

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = load_config(overrides={"tracking": {"enabled": True, "uri": uri,
                                                   "experiment": "evals"}})
    result = judgealign.evaluate(judge, TEST, train=TRAIN, config=settings, bootstrap=200)
    paths = result.write(tmp_path / "report")
    data = json.loads(paths[0].read_text())
    assert data["n_items"] == 4 and data["judge"]["artifact_sha256"] == judge.artifact_sha256
    dims = {(d["predictor"], d["dimension"]): d for d in [*data["dimensions"],
                                                          *data["references"]]}
    assert dims[("judge", "clarity")]["mae"] == pytest.approx(1.25)
    assert dims[("judge", "clarity")]["confusion"]["columns"][-1] == "FAILED"
    assert data["disagreements"][0]["item_id"] == "e4"
    md = paths[1].read_text()
    assert "charges every item" in md and "| e3 | clarity | 1 | FAILED | 2 |" in md

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("evals")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags[KIND_TAG] == "evaluation"
    metrics = run.data.metrics
    assert metrics["clarity/mae"] == pytest.approx(1.25)
    assert metrics["clarity/n_failed"] == 1.0
    assert metrics["reference/constant/correctness/mae"] == pytest.approx(1.25)
    assert metrics["comparison/constant/correctness/diff"] == pytest.approx(-0.5)
    assert run.data.params["judge.artifact_sha256"] == judge.artifact_sha256
    assert {f.path for f in client.list_artifacts(run.info.run_id)} == {
        "evaluation.json", "evaluation.md"}


def test_evaluate_on_the_human_assessments_of_mlflow_traces(judge, tmp_path):
    """The loop inside MLflow: traces of an agent, human feedback on them, a saved judge
    evaluated on that feedback by experiment name."""
    import mlflow
    from mlflow.entities import AssessmentSource

    import judgealign
    from judgealign.config import load_config

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("agent-traces")
        human = AssessmentSource(source_type="HUMAN", source_id="alice")
        ids = {}
        for answer, correctness in (("Paris is the capital", 3), ("Lyon", 3), ("Nice", 1)):
            with mlflow.start_span("agent") as span:
                span.set_inputs({"answer": answer})
                span.set_outputs("done")
            ids[answer] = span.trace_id
            mlflow.log_feedback(trace_id=span.trace_id, name="correctness", value=correctness,
                                rationale="alice says", source=human)
        # An LLM judge's feedback is no label.
        mlflow.log_feedback(trace_id=ids["Nice"], name="correctness", value=3,
                            source=AssessmentSource(source_type="LLM_JUDGE", source_id="x"))
    finally:
        mlflow.set_tracking_uri(None)

    settings = load_config(overrides={"tracking": {"uri": uri}})
    result = judgealign.evaluate(judge, traces="agent-traces", config=settings, bootstrap=100)
    assert [d.dimension for d in result.dimensions] == ["correctness"]
    assert result.n_items == 3 and "agent-traces" in result.labels
    by_item = {j.item_id: j for j in result.judgments}
    assert (by_item[ids["Lyon"]].human, by_item[ids["Lyon"]].judge) == (3, 1)
    assert result.agreement_of("correctness").mae == pytest.approx(2 / 3)


def test_confusion_matrix_without_na():
    from judgealign.evaluation.evaluate import confusion_matrix

    cm = confusion_matrix([0, 4, 4], [0, 3, None], [False, False, True], levels=range(5),
                          allow_na=False)
    assert cm.rows == ["0", "1", "2", "3", "4"] and cm.columns[-1] == "FAILED"
    assert cm.counts[4] == [0, 0, 0, 1, 0, 1]  # a failed judgment's judge entry is ignored
    with_na = confusion_matrix([1], [None], None, levels=[1, 2], allow_na=False)
    assert with_na.columns == ["1", "2", "N/A", "FAILED"]  # an N/A is never dropped


def test_cli_evaluate_in_a_fresh_process(judge_dir, tmp_path):
    def write(name: str, rows: list[dict[str, Any]]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    write("test.jsonl", TEST)
    write("train.jsonl", TRAIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGEALIGN_")}
    env.update({"OPENAI_API_KEY": "test-key", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "JUDGEALIGN_CACHE_DIR": str(tmp_path / ".cache"),
                "DSPY_CACHEDIR": str(tmp_path / ".dspy"), "ANONYMIZED_TELEMETRY": "False"})
    with FakeOpenAIServer(respond) as server:
        def cli(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "judgealign.cli", "evaluate", *argv,
                                   "--lm", "openai/fake", "--api-base", server.api_base],
                                  capture_output=True, text=True, cwd=tmp_path, env=env,
                                  timeout=300)

        proc = cli("--judge", str(judge_dir), "--labels", "test.jsonl", "--train",
                   "train.jsonl", "--out", "report", "--bootstrap", "200")
        assert proc.returncode == 0, proc.stderr
        assert server.requests  # the judge really judged, over HTTP
        missing = cli("--judge", str(judge_dir), "--labels", "nope.jsonl")
    lines = proc.stdout.splitlines()
    clarity = next(line.split() for line in lines if line.startswith("clarity ")
                   and " judge " in line)
    assert clarity[2:4] == ["1.25", "0.50"]  # MAE charged, MAE scored
    assert "MAE charges every item" in proc.stdout
    assert "e4  correctness: human 3, judge 1 (charge 2)" in proc.stdout
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert report["labels"] == "test.jsonl" and report["train"] == "train.jsonl"
    assert (tmp_path / "report" / "evaluation.md").is_file()
    assert missing.returncode == 2
    assert "nope.jsonl" in missing.stderr and "Traceback" not in missing.stderr


def test_evaluate_needs_labels_or_traces_and_known_dimensions(judge):
    import judgealign
    from judgealign.errors import ConfigError, LabelError

    with pytest.raises(ConfigError, match="labels or traces"):
        judgealign.evaluate(judge)
    only_correctness = [r for r in TEST if r["dimension"] == "correctness"]
    with pytest.raises(LabelError, match=r"no labels for dimension\(s\) \['clarity'\]"):
        judgealign.evaluate(judge, only_correctness, dimensions=["clarity"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # held-out items: no warning
        result = judgealign.evaluate(judge, only_correctness)
    assert [d.dimension for d in result.dimensions] == ["correctness"]
    assert result.references == [] and result.comparisons == []
