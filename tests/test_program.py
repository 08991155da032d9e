from __future__ import annotations

import threading

import dspy
import pytest

from judgealign.errors import ItemError
from judgealign.program import RubricJudge
from judgealign.testing import dimension_of, scripted_lm


def recorder():
    """A scripted answer that keeps every prompt it was asked."""
    seen = []

    def respond(prompt):
        seen.append(prompt)
        return {"score": "1", "rationale": "r"}

    return seen, respond


def test_judge_scores_every_dimension(tiny_rubric):
    def respond(prompt):
        if dimension_of(prompt) == "Clarity":
            return {"score": "N/A", "rationale": "empty answer"}
        return {"score": "2", "rationale": "partly right"}

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond))
    result = judge(answer="42", question="6 x 7?")
    assert result["correctness"].score == 2
    assert result["correctness"].rationale == "partly right"
    assert result["clarity"].score is None and result["clarity"].label == "N/A"
    assert not any(r.failed for r in result)


def test_a_failed_dimension_is_recorded_without_losing_the_others(tiny_rubric):
    def respond(prompt):
        if dimension_of(prompt) == "Clarity":
            return "I refuse to answer in JSON"
        return {"score": "3", "rationale": "right"}

    lm = scripted_lm(respond)
    judge = RubricJudge(tiny_rubric, lm=lm)
    results = judge.batch([{"answer": "a"}, {"answer": "b"}], num_threads=2)
    for res in results:
        assert res["correctness"].score == 3
        assert res["clarity"].failed and res["clarity"].score is None
        assert "refuse" in (res["clarity"].raw or "")
    assert lm.engine.calls == 2 * (1 + judge.judges["clarity"].max_attempts)


def test_out_of_scale_answer_is_a_failure_not_a_score(tiny_rubric):
    judge = RubricJudge(tiny_rubric, lm=scripted_lm(lambda p: {"score": "7", "rationale": "x"}))
    result = judge(answer="a")
    assert result["correctness"].failed


def test_missing_and_unknown_inputs_are_clear_errors(tiny_rubric):
    judge = RubricJudge(tiny_rubric, lm=scripted_lm(lambda p: {"score": "1", "rationale": ""}))
    with pytest.raises(ItemError, match="missing required input field 'answer'"):
        judge(question="q")
    with pytest.raises(ItemError, match="unknown input field"):
        judge(answer="a", notebook="n")


def test_batch_keeps_input_order_and_ids(tiny_rubric):
    def respond(prompt):
        return {"score": "3" if "answer-3" in prompt else "1", "rationale": "r"}

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond))
    items = [{"answer": f"answer-{i}"} for i in range(6)]
    out = judge.batch(items, item_ids=[f"i{i}" for i in range(6)], num_threads=4)
    assert [r.item_id for r in out] == [f"i{i}" for i in range(6)]
    assert [r["correctness"].score for r in out] == [1, 1, 1, 3, 1, 1]


def test_long_items_are_truncated_to_the_context(tiny_rubric):
    seen, respond = recorder()
    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond, context_window=2048))
    judge(answer="word " * 20000)
    assert all(len(p) < 2048 * 4 for p in seen)
    assert "cut to fit the judge's context" in seen[0]


def test_uses_dspy_configured_lm_when_none_given(tiny_rubric):
    lm = scripted_lm(lambda p: {"score": "2", "rationale": "r"})
    with dspy.context(lm=lm):
        assert RubricJudge(tiny_rubric)(answer="a")["clarity"].score == 2
    assert threading.active_count() >= 1


def test_item_token_cap_shortens_the_judged_item(tiny_rubric):
    seen, respond = recorder()
    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond), item_tokens=100)
    judge(answer="word " * 5000, dimensions=["correctness"])
    assert "cut to fit the judge's context" in seen[0]
    assert seen[0].count("word") < 150


def test_demos_a_dspy_optimizer_sets_get_the_same_token_budget(tiny_rubric):
    seen, respond = recorder()
    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond), demo_input_tokens=50)
    judge.judges["correctness"].predict.demos = [
        dspy.Example(answer="demo " * 3000, score="2", rationale="long demo").with_inputs("answer")]
    judge(answer="short answer", dimensions=["correctness"])
    assert "long demo" in seen[0]  # the demo is shown...
    assert seen[0].count("demo ") < 100  # ...cut to its budget, not 3,000 words
