"""The judge as an MLflow GenAI scorer: a real ``mlflow.genai.evaluate`` run on a local SQLite
store with a scripted LM, and the row -> rubric input mapping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from judgealign.adapter import judged_text
from judgealign.testing import dimension_of, scripted_lm

TRAIN = [
    {"item_id": "t-paris", "inputs": {"answer": "Paris is the capital of France"},
     "dimension": "correctness", "score": 3, "rationale": "names the right city"},
    {"item_id": "t-lyon", "inputs": {"answer": "Lyon"}, "dimension": "correctness", "score": 1,
     "rationale": "wrong city"},
]


def respond(prompt: str) -> dict[str, Any] | str:
    """Right answers get 3, others 1; clarity of an answer mentioning Lyon is unparseable and
    an empty-looking answer is N/A on clarity."""
    if "existing_guidelines" in prompt:
        return {"guidelines": []}
    text = judged_text(prompt, "answer")  # the judged item, not the demos
    dim = dimension_of(prompt)
    if dim == "Clarity" and "Lyon" in text:
        return "I cannot answer in JSON"
    if dim == "Clarity" and "(silence)" in text:
        return {"score": "N/A", "rationale": "nothing to read"}
    return {"score": "3" if "Paris" in text else "1", "rationale": f"{dim}: judged"}


@pytest.fixture(scope="module")
def _migrated_db(tmp_path_factory) -> Path:
    """An empty, migrated MLflow sqlite store: creating one takes seconds, copying it none."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking(_migrated_db, tmp_path, monkeypatch):
    import mlflow

    shutil.copy(_migrated_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def saved_judge(tiny_rubric, tmp_path):
    """A judge aligned on two items (episodic memory), saved and loaded back."""
    import judgealign
    from judgealign.labels import LabelSet
    from judgealign.program import RubricJudge

    lm = scripted_lm(respond)
    labels = LabelSet.from_records(TRAIN, rubric=tiny_rubric)
    with pytest.warns(UserWarning):  # no guideline distilled: the scripted reflector says none
        aligned = judgealign.align(RubricJudge(tiny_rubric, lm=lm), labels)
    aligned.save(tmp_path / "judge")
    return judgealign.load(tmp_path / "judge", lm=lm)


def test_scorer_in_mlflow_genai_evaluate_logs_one_feedback_per_dimension(saved_judge, tracking):
    import mlflow

    assert saved_judge.artifact_sha256  # set by load: the saved judge's manifest hash
    mlflow.set_experiment("scorer")
    data = [{"inputs": {"question": "Capital of France?"}, "outputs": "Paris"},
            {"inputs": {"question": "Capital of France?"}, "outputs": "Lyon"}]
    result = mlflow.genai.evaluate(data=data, scorers=[saved_judge.as_scorer()])

    traces = mlflow.search_traces(run_id=result.run_id, return_type="list")
    assert len(traces) == 2
    by_answer = {json.loads(t.data.response): t for t in traces}
    feedback = {answer: {a.name: a for a in t.info.assessments if a.name.startswith("tiny/")}
                for answer, t in by_answer.items()}
    assert set(feedback["Paris"]) == {"tiny/correctness", "tiny/clarity"}

    paris = feedback["Paris"]["tiny/correctness"]
    assert paris.value == 3 and paris.rationale == "Correctness: judged"
    assert paris.source.source_type == "LLM_JUDGE" and paris.source.source_id == "scripted/test"
    assert paris.metadata["judge_sha256"] == saved_judge.artifact_sha256
    assert paris.metadata["dimension"] == "correctness"
    # Both training items are the episodic memory of correctness: both were shown as demos.
    assert sorted(json.loads(paris.metadata["retrieved_ids"])) == ["t-lyon", "t-paris"]
    assert feedback["Lyon"]["tiny/correctness"].value == 1

    failed = feedback["Lyon"]["tiny/clarity"]  # unparseable twice: an error, not an exception
    assert failed.value is None
    assert failed.error.error_code == "JUDGE_FAILED"
    assert "AdapterParseError" in failed.error.error_message
    assert feedback["Paris"]["tiny/clarity"].value == 3
    # MLflow aggregates the numeric feedback of the run (failed ones are left out).
    assert result.metrics["tiny/correctness/mean"] == pytest.approx(2.0)
    assert result.metrics["tiny/clarity/mean"] == pytest.approx(3.0)


def test_scorer_runs_on_existing_traces_with_a_custom_name(saved_judge, tracking):
    import mlflow

    mlflow.set_experiment("agent")

    @mlflow.trace
    def agent(question: str) -> dict[str, str]:
        return {"answer": "(silence)" if "Spain" in question else "Paris", "model": "v2"}

    agent("Capital of France?")
    agent("Capital of Spain?")
    traces = mlflow.search_traces(return_type="list")
    scorer = saved_judge.as_scorer("geo", inputs_map={"answer": "outputs.answer",
                                                     "question": "inputs.question"})
    result = mlflow.genai.evaluate(data=traces, scorers=[scorer])
    values = {}
    for trace in mlflow.search_traces(run_id=result.run_id, return_type="list"):
        question = json.loads(trace.data.request)["question"]
        values[question] = {a.name: a.value for a in trace.info.assessments
                            if a.name.startswith("geo/")}
    assert values["Capital of France?"] == {"geo/correctness": 3, "geo/clarity": 3}
    assert values["Capital of Spain?"] == {"geo/correctness": 1, "geo/clarity": "N/A"}


def test_row_to_item_defaults_and_mapping(tiny_rubric):
    from judgealign.errors import ItemError
    from judgealign.scorer import row_to_item

    # A plain answer fills the main (first required) input; other inputs come by name.
    assert row_to_item(tiny_rubric, {"question": "Q?"}, "Paris") == {"answer": "Paris",
                                                                       "question": "Q?"}
    # Inputs win over the plain answer for the main input; dict outputs are looked up by name.
    assert row_to_item(tiny_rubric, {"answer": "from inputs"}, "ignored") == {
        "answer": "from inputs"}
    assert row_to_item(tiny_rubric, {"question": "Q?"}, {"answer": {"city": "Paris"}}) == {
        "answer": '{"city": "Paris"}', "question": "Q?"}
    mapped = row_to_item(tiny_rubric, {"q": "Q?"}, {"response": "Paris"},
                         {"answer": "outputs.response", "question": "inputs.q"})
    assert mapped == {"answer": "Paris", "question": "Q?"}
    with pytest.raises(ItemError, match=r"needs input\(s\) \['answer'\]"):
        row_to_item(tiny_rubric, {"question": "Q?"}, {"response": "Paris"})
    with pytest.raises(ItemError, match="no key 'reply'"):
        row_to_item(tiny_rubric, {}, {"response": "x"}, {"answer": "outputs.reply"})


def test_bad_inputs_map_is_rejected_when_the_scorer_is_built(tiny_rubric):
    from judgealign.errors import ConfigError
    from judgealign.program import RubricJudge

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond))
    with pytest.raises(ConfigError, match="'notebook' is not an input of rubric 'tiny'"):
        judge.as_scorer(inputs_map={"notebook": "outputs"})
    with pytest.raises(ConfigError, match="expected 'inputs', 'outputs'"):
        judge.as_scorer(inputs_map={"answer": "expectations.answer"})


def test_scorer_never_raises(tiny_rubric):
    from judgealign.program import RubricJudge

    def broken(prompt: str) -> dict[str, Any]:
        raise ConnectionError("LM server down")

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(broken))
    scorer = judge.as_scorer()
    out = scorer(inputs={"question": "Q?"}, outputs="Paris")
    assert [f.name for f in out] == ["tiny/correctness", "tiny/clarity"]
    assert all(f.error.error_code == "JUDGE_FAILED" and "LM server down" in
               f.error.error_message for f in out)
    # A row the rubric cannot read: one input error per dimension, naming the field.
    out = scorer(inputs={"question": "Q?"}, outputs={"unrelated": 1})
    assert [f.error.error_code for f in out] == ["JUDGE_INPUT", "JUDGE_INPUT"]
    assert "'answer'" in out[0].error.error_message
    # A judge never saved has no artifact hash.
    assert "judge_sha256" not in out[0].metadata


def test_probabilities_and_score_policy_reach_the_metadata(tiny_rubric):
    from judgealign.program import RubricJudge

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond))
    direct = judge(answer="Paris")  # what the judge itself says of the same item
    out = {f.name: f for f in judge.as_scorer()(inputs={}, outputs="Paris")}
    for dim in ("correctness", "clarity"):
        meta, res = out[f"tiny/{dim}"].metadata, direct[dim]
        assert res.probabilities  # a judgment is a distribution over the levels
        assert json.loads(meta["probabilities"]) == res.probabilities
        assert meta["probabilities_source"] == res.probabilities_source
        assert meta["score_policy"] == res.policy
        assert meta["sampled_score"] == str(res.sampled_score)
    # The scripted LM gives no log probabilities: all mass on the level it wrote (3), and
    # clarity's distribution has the N/A label its dimension allows.
    assert json.loads(out["tiny/clarity"].metadata["probabilities"])["N/A"] == 0.0
    assert json.loads(out["tiny/correctness"].metadata["probabilities"])["3"] == 1.0
