"""Joint mode (issue 15, item 3) and batch throughput (item 4): one call per item scores every
dimension, a malformed dimension fails alone, the prompt shares the item-first prefix, demos
are compact label lines, calibration features come from joint judgments without leakage, and
``batch`` keeps at most ``num_threads`` calls in flight with a running cost."""

from __future__ import annotations

import json
import re
import threading
import time

import dspy
import pytest

from judgealign import build
from judgealign.adapter import ITEM_OPEN, JudgeAdapter, judged_text
from judgealign.joint import JointAdapter, joint_signature, rationale_field, score_field
from judgealign.labels import LabelSet
from judgealign.memory.semantic import Guideline
from judgealign.optimizers.memalign import MemAlign
from judgealign.program import RubricJudge
from judgealign.signatures.rubric import build_signature
from judgealign.testing import ScriptedEngine, request_text, scripted_lm, with_levels
from judgealign.usage import CostMeter, _dollars


def asked_dimensions(prompt: str) -> list[str]:
    """The score fields a joint prompt asks for, in order."""
    return list(dict.fromkeys(re.findall(r"`(\w+)_score`", prompt)))


def joint_answer(prompt: str, scores: dict[str, str]) -> dict[str, str]:
    out = {}
    for dim in asked_dimensions(prompt):
        out[score_field(dim)] = scores[dim]
        out[rationale_field(dim)] = f"{dim} reason"
    return out


def test_one_call_per_item_scores_every_dimension(tiny_rubric):
    prompts = []

    def respond(prompt):
        prompts.append(prompt)
        return joint_answer(prompt, {"correctness": "3", "clarity": "N/A"})

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond), mode="joint", policy="sampled")
    result = judge(answer="forty-two", item_id="x1")
    assert len(prompts) == 1
    assert result.item_id == "x1" and list(result.dimensions) == ["correctness", "clarity"]
    assert (result["correctness"].score, result["clarity"].score) == (3, None)
    assert result["correctness"].rationale == "correctness reason"
    prompt = prompts[0]
    # The item once, first; then one section per dimension, in rubric order.
    assert prompt.count("forty-two") == 1
    # The dimensions are described before the item (in the system message), the question last.
    assert prompt.index("## Dimension 1") < prompt.index(ITEM_OPEN.format(field="answer"))
    assert prompt.rindex("Judge the item") > prompt.index(ITEM_OPEN.format(field="answer"))
    assert prompt.index("Is the answer right?") < prompt.index("Is the answer clear?")
    assert asked_dimensions(prompt) == ["correctness", "clarity"]
    # Said once for all dimensions, not per section; nothing says "one dimension at a time".
    assert "Judge one dimension only" not in prompt and "one at a time" not in prompt
    assert "one dimension of the item at a time" not in prompt
    assert prompt.count("at most 15 words") == 1 and "- 2: partly right" in prompt
    assert judge(answer="x", dimensions=[]).dimensions == {}  # nothing asked, no call
    assert len(prompts) == 1


def test_a_malformed_dimension_fails_alone_and_only_it_is_asked_again(tiny_rubric):
    prompts = []

    def respond(prompt):
        prompts.append(prompt)
        answer = joint_answer(prompt, {"correctness": "2", "clarity": "7"})
        if len(prompts) > 1:
            answer[score_field("clarity")] = "1"  # the retry answers properly
        return answer

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond), mode="joint", policy="sampled")
    result = judge(answer="a")
    assert len(prompts) == 2
    assert asked_dimensions(prompts[1]) == ["clarity"]
    assert (result["correctness"].score, result["clarity"].score) == (2, 1)

    def never(prompt):  # clarity is missing from every answer
        return {score_field("correctness"): "2", rationale_field("correctness"): "ok"}

    failed = RubricJudge(tiny_rubric, lm=scripted_lm(never), mode="joint")(answer="a")
    assert not failed["correctness"].failed and failed["correctness"].score == 2
    assert failed["clarity"].failed and "score" in failed["clarity"].error
    assert failed["clarity"].raw  # the answer is kept for inspection


def test_a_joint_prompt_starts_with_the_per_dimension_shared_part(tiny_rubric):
    inputs = {"answer": "the answer", "question": "q"}
    per_dim = JudgeAdapter(tiny_rubric).format(
        build_signature(tiny_rubric, "correctness"), [], inputs)
    dims = ["correctness", "clarity"]
    joint = JointAdapter(tiny_rubric, dict.fromkeys(dims, "x")).format(
        joint_signature(tiny_rubric, dims), [], inputs)
    # Same system message opening (the answer fields aside), same item and acknowledgement.
    assert joint[1:3] == per_dim[1:3]
    assert joint[0]["content"].split("You will be asked")[0] == per_dim[0]["content"].split(
        "You will be asked")[0]


def test_consecutive_joint_prompts_share_everything_before_the_item(tiny_rubric):
    """What llama.cpp and provider prompt caches reuse across items: the system message holds
    every dimension's section and nothing of the item, its demos or the guidelines."""
    dims = ["correctness", "clarity"]
    sections = {"correctness": "Is the answer right?", "clarity": "Is the answer clear?"}
    adapter = JointAdapter(tiny_rubric, sections,
                           guidelines={"correctness": "- check the units"})
    signature = joint_signature(tiny_rubric, dims)
    first = adapter.format(signature, [{"dimension": "clarity", "score": 1,
                                        "rationale": "rambles"}], {"answer": "alpha"})
    second = adapter.format(signature, [], {"answer": "beta"})
    assert first[0] == second[0]
    assert "Is the answer clear?" in first[0]["content"]
    assert "alpha" not in first[0]["content"] and "rambles" not in first[0]["content"]
    assert "- score 1: rambles" in first[3]["content"] and "rambles" not in second[3]["content"]
    assert first[1]["content"] != second[1]["content"]


def test_what_alignment_learned_comes_after_the_item(tiny_rubric):
    """The unaligned and the aligned judge (and every fold's) share the prompt up to and
    including the item: guidelines and demos follow it, so an engine's state per item or a
    provider's prompt cache serves them all."""
    dims = ["correctness", "clarity"]
    sections = {"correctness": "Is the answer right?", "clarity": "Is the answer clear?"}
    signature = joint_signature(tiny_rubric, dims)
    inputs = {"answer": "alpha"}
    bare = JointAdapter(tiny_rubric, sections).format(signature, [], inputs)
    aligned = JointAdapter(tiny_rubric, sections,
                           guidelines={"correctness": "- check the units"}
                           ).format(signature, [{"dimension": "clarity", "score": 1,
                                                 "rationale": "rambles"}], inputs)
    assert aligned[:3] == bare[:3]
    last = aligned[3]["content"]
    assert "check the units" not in bare[3]["content"]
    assert last.index("Dimension 1 (") < last.index("check the units") \
        < last.index("Dimension 2 (") < last.index("rambles") < last.index("Judge the item")


def test_demos_are_compact_label_lines_without_the_items_text(tiny_rubric):
    rows = [{"item_id": f"d{i}", "inputs": {"answer": f"demo answer {i} zebra"},
             "dimension": dim, "score": 2, "rationale": f"{dim} note {i}"}
            for i in range(3) for dim in ("correctness", "clarity")]
    seen = []

    def respond(prompt):
        seen.append(prompt)
        return joint_answer(prompt, {"correctness": "2", "clarity": "2"})

    lm = scripted_lm(respond)
    judge = MemAlign(semantic=False, policy="sampled", k=2).compile(
        RubricJudge(tiny_rubric, lm=lm, mode="joint"),
        trainset=LabelSet.from_records(rows, rubric=tiny_rubric))
    seen.clear()
    result = judge(answer="demo answer zebra")
    prompt = seen[0]
    assert "- score 2: correctness note" in prompt and "- score 2: clarity note" in prompt
    assert "demo answer 0" not in prompt  # the demos' item text stays out
    assert len(result["correctness"].retrieved_ids) == 2


def test_level_probabilities_are_read_per_score_field(tiny_rubric):
    def respond(prompt):
        answer = joint_answer(prompt, {"correctness": "2", "clarity": "3"})
        return with_levels(answer, {"1": 0.2, "2": 0.5, "3": 0.3},
                           field_name=score_field("correctness"))

    result = RubricJudge(tiny_rubric, lm=scripted_lm(respond), mode="joint")(answer="a")
    corr, clar = result["correctness"], result["clarity"]
    assert corr.probabilities_source == "logprobs"
    assert corr.probabilities == pytest.approx({"1": 0.2, "2": 0.5, "3": 0.3})
    # The scripted answer gives clarity's value as a certain token: all mass on it.
    assert clar.probabilities["3"] == 1.0 and clar.score == 3


def test_the_mode_comes_from_the_settings_and_is_part_of_the_state(tiny_rubric, tmp_path):
    settings = build.settings_from(None, overrides={"scoring": {"mode": "joint"}})
    judge = build.program(tiny_rubric, settings)
    assert judge.mode == "joint"
    assert build.variant_settings(build.settings_from(None), "memalign-joint").scoring.mode \
        == "joint"
    state = judge.dump_state()
    assert state["mode"] == "joint"
    fresh = RubricJudge(tiny_rubric)
    fresh.load_state(state)
    assert fresh.mode == "joint"
    del state["mode"]  # a state written before joint mode
    assert RubricJudge(tiny_rubric, mode="joint").load_state(state).mode == "per-dimension"
    with pytest.raises(ValueError, match="mode"):
        RubricJudge(tiny_rubric).load_state({**judge.dump_state(), "mode": "together"})
    with pytest.raises(ValueError, match="unknown judging mode"):
        RubricJudge(tiny_rubric, mode="together")


def test_calibration_features_come_from_one_joint_call_per_item_without_leakage(tiny_rubric):
    """Each training item is judged once for both dimensions, and never sees its own label:
    every item has a twin with the same text and label, and neither may be retrieved while
    the item's calibration features are computed (the demo lines name their source item).
    Twins, having the same inputs and the same exclusions, are one judgment: judged once
    even when threads ask for both at the same time."""
    items = [(f"t{i:02d}", f"answer {i // 2} [truth {1 + (i // 2) % 3}]") for i in range(24)]
    rows = [{"item_id": iid, "inputs": {"answer": text}, "dimension": dim,
             "score": truth_of_text(text), "rationale": f"label of {iid}"}
            for iid, text in items for dim in ("correctness", "clarity")]
    twins = {iid: {j for j, t in items if t == text} for iid, text in items}
    calls = []
    lock = threading.Lock()

    def respond(prompt):
        with lock:
            calls.append(prompt)
        return joint_answer(prompt, {"correctness": "2", "clarity": "2"})

    judge = MemAlign(semantic=False, policy="calibrated", k=2).compile(
        RubricJudge(tiny_rubric, lm=scripted_lm(respond), mode="joint"),
        trainset=LabelSet.from_records(rows, rubric=tiny_rubric))
    # One joint call per distinct text (twins share it), for both dimensions.
    assert len(calls) == len({text for _, text in items}) == 12
    by_text = {text: iid for iid, text in items}
    for prompt in calls:
        shown = set(re.findall(r"label of (t\d\d)", prompt))
        assert len(shown) >= 2
        assert not shown & twins[by_text[judged_text(prompt, "answer")]]
    for dim in ("correctness", "clarity"):
        cal = judge.judges[dim].calibration
        assert cal is not None and len(cal.rows) == len(items)
        for row in cal.rows:
            assert row.retrieved and not set(row.retrieved) & twins[row.item_id]


def test_calibration_asks_for_the_scores_alone_with_the_prompt_of_a_full_judgment(tiny_rubric):
    """Every score comes before every rationale, so a calibration call (features: the level
    probabilities) can stop after the scores: it sends the very prompt a full judgment of the
    item with the same exclusions sends, with a response schema of the score fields alone."""
    from judgealign.joint import JointMemo, JointView, judge_jointly

    dims = ["correctness", "clarity"]
    assert list(joint_signature(tiny_rubric, dims).output_fields) == [
        "correctness_score", "clarity_score", "correctness_rationale", "clarity_rationale"]
    rows = [{"item_id": f"t{i:02d}", "inputs": {"answer": f"answer {i}"}, "dimension": dim,
             "score": 1 + i % 3, "rationale": f"label of t{i:02d}"}
            for i in range(12) for dim in dims]
    seen = []  # (prompt, fields of the response schema)

    def respond(prompt):  # what the schema asks for, as a constraining engine writes
        answer = joint_answer(prompt, {"correctness": "2", "clarity": "1"})
        return {k: v for k, v in answer.items() if k in seen[-1][1]}

    lm = scripted_lm(respond)
    engine = lm.engine if hasattr(lm, "engine") else lm._engine
    complete = engine.complete

    def recording(request):
        schema = json.dumps(request.config.response_format, default=str)
        seen.append((request_text(request),
                     sorted(set(re.findall(r'"(\w+_(?:score|rationale))"', schema)))))
        return complete(request)

    engine.complete = recording
    # k=0: no demo lines, whose order among equally similar items is not guaranteed.
    judge = MemAlign(semantic=False, policy="calibrated", k=0).compile(
        RubricJudge(tiny_rubric, lm=lm, mode="joint"),
        trainset=LabelSet.from_records(rows, rubric=tiny_rubric))
    assert len(seen) == 12
    assert all(fields == ["clarity_score", "correctness_score"] for _, fields in seen)
    calibration_prompt = next(p for p, _ in seen if judged_text(p, "answer") == "answer 3")
    seen.clear()
    inputs = {"answer": "answer 3", "question": ""}
    vector = judge._query_vectors([inputs], dims)[0]
    full = judge_jointly(judge, inputs, dims, vector=vector, exclude={"t03"}, collect=True)
    assert seen[0][0] == calibration_prompt
    assert seen[0][1] == ["clarity_rationale", "clarity_score", "correctness_rationale",
                          "correctness_score"]
    assert full["correctness"].rationale == "correctness reason" and not full["clarity"].failed
    # An answer without rationales is no failure: the features are read, the rationale empty.
    part = JointView(judge, "clarity", dims, JointMemo())(_exclude={"t03"}, **inputs)
    assert not part.failed and part.rationale == ""
    assert part.probabilities == full["clarity"].probabilities


def test_a_joint_prompt_that_leaves_no_room_for_the_item_fails_saying_why(tiny_rubric):
    """Nine dimensions with their guidelines can fill a small model's context: the joint call
    is not sent (the engine would only say "exceed context window") and every dimension fails
    with the reason and what to change."""
    calls = []

    def respond(prompt):
        calls.append(prompt)
        return joint_answer(prompt, {"correctness": "2", "clarity": "2"})

    judge = RubricJudge(tiny_rubric, lm=scripted_lm(respond, context_window=1400),
                        mode="joint", policy="sampled")
    assert not judge(answer="short")["clarity"].failed and len(calls) == 1
    long = "Always check that the answer states the units it uses. " * 40
    judge.judges["correctness"].set_guidelines([Guideline(long, "correctness", ("e1",))])
    result = judge(answer="short")
    assert len(calls) == 1  # nothing sent
    for dim in ("correctness", "clarity"):
        assert result[dim].failed and "ContextWindowError" in result[dim].error
        assert "max_guidelines" in result[dim].error and "1400-token context" in result[dim].error


def truth_of_text(text: str) -> int:
    return int(re.search(r"\[truth (\d)\]", text).group(1))


class SlowEngine(ScriptedEngine):
    """Records how many calls are in flight at once."""

    def __init__(self, respond):
        super().__init__(respond)
        self.active = self.peak = 0

    def complete(self, request):
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.02)
            return super().complete(request)
        finally:
            with self._lock:
                self.active -= 1


@pytest.mark.parametrize("mode", ["per-dimension", "joint"])
def test_batch_keeps_at_most_num_threads_calls_in_flight(tiny_rubric, mode):
    def respond(prompt):
        if mode == "joint":
            return joint_answer(prompt, {"correctness": "2", "clarity": "1"})
        return {"score": "2", "rationale": "r"}

    engine = SlowEngine(respond)
    lm = dspy.LM("scripted/slow", engine=engine, cache=False)
    judge = RubricJudge(tiny_rubric, lm=lm, mode=mode, policy="sampled")
    items = [{"answer": f"a{i}"} for i in range(12)]
    results = judge.batch(items, item_ids=[f"i{i}" for i in range(12)], num_threads=3,
                          progress=True)
    assert engine.peak <= 3 and engine.peak >= 2
    assert [r.item_id for r in results] == [f"i{i}" for i in range(12)]
    assert all(r["correctness"].score == 2 for r in results)
    assert engine.calls == (12 if mode == "joint" else 24)


def test_the_running_cost_counts_calls_while_they_happen():
    lm = scripted_lm(lambda p: {"score": "2", "rationale": "r"})
    with CostMeter() as meter:
        before = meter.running()
        lm("hello")
        lm("again")
        during = meter.running()
    assert before.calls == 0 and during.calls == 2 and during.prompt_tokens > 0
    assert during.dollars is None  # litellm does not price a scripted model
    assert "2 calls" in during.describe()
    priced = _dollars("openai/gpt-4o-mini", 1000, 100)
    assert priced is not None and priced > 0
    assert json.dumps(during.describe())


def test_the_concurrency_setting_bounds_calls_in_flight_by_default(tiny_rubric):
    from judgealign.config import LMSettings
    from judgealign.lm import build_lm, lm_concurrency

    assert lm_concurrency(build_lm(LMSettings(model="openai/x", concurrency=3))) == 3
    assert lm_concurrency(build_lm(LMSettings(model="openai/x"))) == 8
    engine = SlowEngine(lambda prompt: {"score": "2", "rationale": "r"})
    lm = dspy.LM("scripted/slow", engine=engine, cache=False)
    lm.judgealign_concurrency = 2  # what build_lm sets from [lm] concurrency
    RubricJudge(tiny_rubric, lm=lm).batch([{"answer": f"a{i}"} for i in range(8)])
    assert engine.peak == 2
    engine.parallel_safe = False  # an in-process model: one call at a time, whatever is asked
    engine.peak = 0
    RubricJudge(tiny_rubric, lm=lm).batch([{"answer": f"a{i}"} for i in range(4)],
                                          num_threads=4)
    assert engine.peak == 1


def test_a_rate_limited_call_is_retried_with_backoff(tiny_rubric, monkeypatch):
    from judgealign.config import LMSettings
    from judgealign.lm import build_lm
    from judgealign.testing import FakeOpenAIServer, Refusal

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    seen = []
    lock = threading.Lock()

    def respond(prompt):
        with lock:
            seen.append(prompt)
            # The first request of each prompt is refused with 429, the next one answered.
            first = seen.count(prompt) == 1
        return Refusal(429) if first else {"score": "2", "rationale": "ok"}

    with FakeOpenAIServer(respond) as server:
        lm = build_lm(LMSettings(model="openai/fake", api_base=server.api_base, cache=False,
                                 num_retries=2))
        results = RubricJudge(tiny_rubric, lm=lm, policy="sampled").batch(
            [{"answer": f"a{i}"} for i in range(3)], num_threads=3)
    assert [[r.label for r in res] for res in results] == [["2", "2"]] * 3
    assert len(seen) == 12  # 6 judgments, each refused once
    with FakeOpenAIServer(lambda prompt: Refusal(429)) as server:
        lm = build_lm(LMSettings(model="openai/fake", api_base=server.api_base, cache=False,
                                 num_retries=0))
        failed = RubricJudge(tiny_rubric, lm=lm)(answer="a")
    assert all(r.failed for r in failed)  # recorded as failures, never raised


def test_cv_memalign_joint_judges_each_item_once_and_is_calibrated_like_memalign(tiny_rubric):
    from judgealign.config import load_config
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions

    rows = []
    for i in range(32):
        level = 1 + i % 2
        text = f"answer {i} [truth {level}]"
        rows += [{"item_id": f"t{i:02d}", "inputs": {"answer": text}, "dimension": dim,
                  "score": level, "rationale": "note"} for dim in ("correctness", "clarity")]

    def one_too_high(prompt):
        high = str(truth_of_text(judged_text(prompt, "answer")) + 1)
        joint = asked_dimensions(prompt)
        return joint_answer(prompt, dict.fromkeys(joint, high)) if joint else {
            "score": high, "rationale": "r"}

    result = cross_validate(tiny_rubric, LabelSet.from_records(rows, rubric=tiny_rubric),
                            load_config(environ={}),
                            CVOptions(variants=("memalign", "memalign-joint"), folds=2,
                                      n_bootstrap=200, progress=False),
                            lm=scripted_lm(one_too_high),
                            reflection_lm=scripted_lm(lambda p: {"guidelines": []}))
    for dim in ("correctness", "clarity"):
        assert result.mae_of("memalign", dim)["mae"] == 0.0
        assert result.mae_of("memalign-joint", dim)["mae"] == 0.0
    costs = result.cost_totals()
    assert costs["memalign"]["judge_calls"] == 64  # 32 held-out items x 2 dimensions
    assert costs["memalign-joint"]["judge_calls"] == 32  # one call per held-out item
    joint_reports = [r for (v, _), r in result.align_reports.items() if v == "memalign-joint"]
    for report in joint_reports:
        calls = sum(d["calibration_calls"] for d in report["dimensions"])
        assert calls == 16  # each training item judged once for both calibrations
    from judgealign.evaluation.report import render_markdown

    assert ("- judging: memalign one call per dimension (item-first layout); memalign-joint "
            "one call per item (joint)") in render_markdown(result, figure=None)


def test_a_provider_refusing_logprobs_is_asked_again_without_them(tiny_rubric):
    class Refusing(ScriptedEngine):
        def complete(self, request):
            if request.config.logprobs is not None:
                self.calls += 1
                raise RuntimeError("logprobs are not supported by this deployment")
            return super().complete(request)

    engine = Refusing(lambda p: joint_answer(p, {"correctness": "3", "clarity": "1"}))
    judge = RubricJudge(tiny_rubric, lm=dspy.LM("scripted/refuses", engine=engine, cache=False),
                        mode="joint", policy="sampled")
    result = judge(answer="a")
    assert [r.score for r in result] == [3, 1] and engine.calls == 2


def test_prompt_tokens_a_provider_served_from_its_cache_are_counted(tiny_rubric, monkeypatch):
    from judgealign.config import LMSettings
    from judgealign.lm import build_lm
    from judgealign.testing import FakeOpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeOpenAIServer(lambda p: {"score": "2", "rationale": "ok"},
                          cached_tokens=40) as server:
        lm = build_lm(LMSettings(model="openai/fake", api_base=server.api_base, cache=False))
        with CostMeter() as meter:
            RubricJudge(tiny_rubric, lm=lm)(answer="a")
    assert meter.calls == 2 and meter.cached_prompt_tokens == 80
    assert "80 prompt tokens cached" in meter.running().describe()


def test_cv_costs_count_the_prompt_tokens_a_provider_served_from_its_cache(tiny_rubric,
                                                                           monkeypatch):
    from judgealign.config import LMSettings, load_config
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions
    from judgealign.evaluation.report import _cost_section
    from judgealign.lm import build_lm
    from judgealign.testing import FakeOpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    rows = [{"item_id": f"t{i}", "inputs": {"answer": f"answer {i}"}, "dimension": "correctness",
             "score": 1 + i % 2, "rationale": "note"} for i in range(8)]
    with FakeOpenAIServer(lambda p: {"score": "2", "rationale": "ok"},
                          cached_tokens=30) as server:
        lm = build_lm(LMSettings(model="openai/fake", api_base=server.api_base, cache=False))
        result = cross_validate(tiny_rubric, LabelSet.from_records(rows, rubric=tiny_rubric),
                                load_config(environ={}),
                                CVOptions(variants=("baseline",), folds=2, n_bootstrap=50,
                                          progress=False, dimensions=("correctness",)),
                                lm=lm)
    totals = result.cost_totals()["baseline"]
    assert totals["judge_calls"] == 8
    assert totals["judge_cached_prompt_tokens"] == 8 * 30
    assert "0 + 240" in "\n".join(_cost_section(result))
