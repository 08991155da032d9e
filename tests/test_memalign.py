from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from scenarios import (
    BANANA_RULE,
    LEMONADE,
    ROWS,
    Reflector,
    banana_judge,
    demo_answers,
    judged_answer,
    label_rows,
)

from judgealign import align
from judgealign.errors import LabelError
from judgealign.labels import LabelSet
from judgealign.memory.semantic import GUIDELINES_HEADING
from judgealign.optimizers.memalign import MemAlign
from judgealign.program import RubricJudge
from judgealign.testing import scripted_lm


@pytest.fixture
def labels(tiny_rubric):
    return LabelSet.from_records(label_rows(), rubric=tiny_rubric)


def test_compile_returns_a_copy_with_guidelines_and_episodes(tiny_rubric, labels):
    student = RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge))
    reflector = Reflector()
    judge = MemAlign(reflection_lm=scripted_lm(reflector)).compile(student, trainset=labels)
    assert student.memory is None and not student.judges["correctness"].guidelines
    kept = judge.judges["correctness"].guidelines
    assert [g.text for g in kept] == [BANANA_RULE]
    assert set(kept[0].sources) == {"b1", "b2", "b3"}
    assert [(g.text, g.reason) for g in judge.judges["correctness"].rejected] == \
        [(LEMONADE, "ungrounded")]
    assert BANANA_RULE in judge.judges["correctness"].predict.signature.instructions
    assert LEMONADE not in judge.judges["correctness"].predict.signature.instructions
    assert judge.memory.counts() == {"correctness": 6}
    rep = judge.report.dimensions[0]
    assert (rep.proposed, rep.kept, rep.reflection_calls) == (2, 1, reflector.calls)
    assert rep.modes == ["cited"] and rep.kept_by_mode == {"cited": 1}
    assert kept[0].mode == "cited"
    # validation (on by default): 3 held-out examples without the rule, 3 with it
    assert rep.validation_calls == 6 and rep.unvalidated == 0
    assert kept[0].validation == (0.0, 0.0)
    assert rep.lm_calls == reflector.calls + rep.validation_calls
    assert rep.prompt_tokens > 0


def test_judge_prompt_holds_guidelines_and_retrieved_demos(tiny_rubric, labels):
    prompts = []

    def judge_lm(prompt):
        prompts.append(prompt)
        return banana_judge(prompt)

    judge = MemAlign(reflection_lm=scripted_lm(Reflector()), k=2).compile(
        RubricJudge(tiny_rubric, lm=scripted_lm(judge_lm)), trainset=labels)
    result = judge(answer="My banana answer about gravity.", dimensions=["correctness"])
    prompt = prompts[-1]
    assert GUIDELINES_HEADING in prompt and BANANA_RULE in prompt
    got = result["correctness"].retrieved_ids
    assert len(got) == 2 and set(got) <= {"b1", "b2", "b3"}
    for item_id in got:
        answer, rationale = next((a, r) for i, a, _, r in ROWS if i == item_id)
        assert answer in prompt and rationale in prompt
    assert '"score": "1"' in prompt  # the demos' expert scores


def test_retrieval_returns_nearest_examples_of_the_same_dimension_only(tiny_rubric):
    rows = label_rows() + label_rows(
        [("c1", "A banana, banana, banana answer.", 1, "Confusing banana talk.")], "clarity")
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    judge = MemAlign(semantic=False, k=3).compile(RubricJudge(tiny_rubric), trainset=labels)
    near = judge.memory.retrieve({"answer": "banana banana"}, dimension="correctness", k=3)
    assert {e.item_id for e in near} == {"b1", "b2", "b3"}
    assert all(e.dimension == "correctness" for e in near)
    only = judge.memory.retrieve({"answer": "banana"}, dimension="clarity", k=3)
    assert [e.item_id for e in only] == ["c1"]


def test_ablation_switches_change_exactly_one_memory(tiny_rubric, labels):
    student = RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge))
    reflect = scripted_lm(Reflector())
    both = MemAlign(reflection_lm=reflect).compile(student, trainset=labels)
    sem = MemAlign(reflection_lm=reflect, episodic=False).compile(student, trainset=labels)
    epi = MemAlign(reflection_lm=reflect, semantic=False).compile(student, trainset=labels)
    g = lambda j: [x.text for x in j.judges["correctness"].guidelines]  # noqa: E731
    assert g(sem) == g(both) == [BANANA_RULE] and sem.memory is None
    assert g(epi) == [] and epi.memory.counts() == both.memory.counts()
    assert epi.report.lm_calls == 0


def test_guidelines_are_deduplicated_and_capped(tiny_rubric, labels):
    near_duplicate = BANANA_RULE.replace("wrong", "wrong.")
    physics = ("Answers naming Rayleigh scattering, boiling water or photosynthesis are "
               "correct physics and biology.")
    precise = "Correct and precise physics answers are correct."

    def reflect(prompt):
        ids = re.findall(r"\[(E\d+)\] expert score: \S+\nexpert rationale: ([^\n]*)", prompt)
        banana = [e for e, r in ids if "anana" in r]
        correct = [e for e, r in ids if r.startswith("Correct")]
        return {"guidelines": [{"text": BANANA_RULE, "sources": banana},
                               {"text": near_duplicate, "sources": banana[:1]},
                               {"text": physics, "sources": correct[:2]},
                               {"text": precise, "sources": correct[1:2]}]}

    judge = MemAlign(reflection_lm=scripted_lm(reflect), max_guidelines=2,
                     batch_examples=6).compile(RubricJudge(tiny_rubric), trainset=labels)
    dim = judge.judges["correctness"]
    assert [g.text for g in dim.guidelines] == [BANANA_RULE, physics]  # best supported
    assert sorted((g.text, g.reason) for g in dim.rejected) == sorted(
        [(near_duplicate, "duplicate"), (precise, "over_cap")])
    assert judge.report.dimensions[0].rejected == {"duplicate": 1, "over_cap": 1}


def test_alignment_makes_the_judge_agree_where_the_baseline_did_not(tiny_rubric, labels):
    held_out = [{"answer": "Banana physics says the moon is cheese."},
                {"answer": "Light travels faster than sound."}]
    truth = [1, 3]
    lm = scripted_lm(banana_judge)
    base = RubricJudge(tiny_rubric, lm=lm)
    for variant in (dict(), dict(semantic=False), dict(episodic=False)):
        aligned = MemAlign(reflection_lm=scripted_lm(Reflector()), **variant).compile(
            base, trainset=labels)
        got = [r["correctness"].score for r in aligned.batch(held_out, dimensions=["correctness"])]
        assert got == truth, variant
    baseline = [r["correctness"].score for r in base.batch(held_out, dimensions=["correctness"])]
    assert baseline == [3, 3]


def test_incremental_align_reflects_only_on_unseen_examples(tiny_rubric, labels):
    reflector = Reflector()
    opt = MemAlign(reflection_lm=scripted_lm(reflector))
    first = opt.compile(RubricJudge(tiny_rubric), trainset=labels)
    calls = reflector.calls
    again = opt.compile(first, trainset=labels)
    assert reflector.calls == calls and again.report.lm_calls == 0
    more = LabelSet.from_records(label_rows([("b4", "Banana again.", 1, "Banana: wrong.")]),
                                 rubric=tiny_rubric)
    grown = opt.compile(again, trainset=more)
    assert reflector.calls == calls + 1
    assert grown.report.dimensions[0].new_examples == 1
    assert grown.memory.counts() == {"correctness": 7}
    rule = next(g for g in grown.judges["correctness"].guidelines if g.text == BANANA_RULE)
    assert set(rule.sources) == {"b1", "b2", "b3", "b4"}  # merged, not duplicated


def test_unalign_removes_examples_and_orphaned_guidelines_only(tiny_rubric, labels):
    other = "Answers about Rayleigh scattering of sunlight are correct physics."

    def reflect(prompt):
        ids = dict((a, e) for e, a in re.findall(r"\[(E\d+)\] expert score: \S+\nexpert "
                                                   r"rationale: ([^\n]*)", prompt))
        banana = [e for r, e in ids.items() if "anana" in r]
        physics = [e for r, e in ids.items() if r == "Correct physics."]
        return {"guidelines": [{"text": BANANA_RULE, "sources": banana},
                               {"text": other, "sources": physics}]}

    judge = MemAlign(reflection_lm=scripted_lm(reflect)).compile(
        RubricJudge(tiny_rubric), trainset=labels)
    texts = lambda j: sorted(g.text for g in j.judges["correctness"].guidelines)  # noqa: E731
    assert texts(judge) == sorted([BANANA_RULE, other])
    forgot = judge.unalign(["s1", "b1"])
    assert texts(forgot) == [BANANA_RULE]  # the physics rule lost its only source
    banana = forgot.judges["correctness"].guidelines[0]
    assert set(banana.sources) == {"b2", "b3"}
    assert forgot.memory.item_ids() == {"b2", "b3", "s2", "s3"}
    assert judge.memory.item_ids() == {"b1", "b2", "b3", "s1", "s2", "s3"}  # original intact
    assert not any(k.startswith(("s1::", "b1::")) for k in forgot.seen)


def test_concurrent_calls_each_get_only_their_own_demos(tiny_rubric):
    topics = ["banana", "rocket", "violin", "glacier", "tulip", "compiler", "saxophone",
              "volcano"]
    rows = [(f"t{i}", f"{t} {t} {t} facts about the {t}", 2, f"About the {t}.")
            for i, t in enumerate(topics)]
    labels = LabelSet.from_records(label_rows(rows), rubric=tiny_rubric)
    mismatches = []

    def judge_lm(prompt):
        answer = judged_answer(prompt)
        topic = answer.split()[0]
        demo_blocks = [text for text, _ in demo_answers(prompt)]
        if len(demo_blocks) != 1 or topic not in demo_blocks[0]:
            mismatches.append((answer, demo_blocks))
        return {"score": "2", "rationale": topic}

    judge = MemAlign(semantic=False, k=1).compile(
        RubricJudge(tiny_rubric, lm=scripted_lm(judge_lm)), trainset=labels)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: judge(answer=f"{t} question on {t}",
                                                dimensions=["correctness"]), topics))
    assert not mismatches
    assert [r["correctness"].retrieved_ids for r in results] == [[f"t{i}"] for i in range(8)]
    assert [r["correctness"].rationale for r in results] == topics


def test_leakage_guard_held_out_items_never_enter_memory(tiny_rubric, labels):
    train = labels.subset(["b1", "b2", "s1", "s2"])
    judge = MemAlign(reflection_lm=scripted_lm(Reflector())).compile(
        RubricJudge(tiny_rubric), trainset=train)
    held = {"b3", "s3"}
    assert not held & judge.memory.item_ids()
    assert not held & {s for j in judge.judges.values()
                       for g in j.guidelines + j.rejected for s in g.sources}
    assert not held & {k.split("::")[0] for k in judge.seen}


def test_bad_input_is_reported(tiny_rubric, labels):
    with pytest.raises(LabelError, match="empty"):
        MemAlign(semantic=False).compile(RubricJudge(tiny_rubric), trainset=[])
    rows = label_rows() + [{"item_id": "x", "inputs": {"answer": "a"}, "dimension": "style",
                            "score": 2, "rationale": ""}]
    unchecked = LabelSet.from_records(rows)
    with pytest.raises(LabelError, match="record 7: unknown dimension 'style'"):
        MemAlign(semantic=False).compile(RubricJudge(tiny_rubric), trainset=unchecked)
    silent = LabelSet.from_records([dict(r, rationale="") for r in label_rows()],
                                   rubric=tiny_rubric)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        judge = MemAlign(reflection_lm=scripted_lm(Reflector(extra=()))).compile(
            RubricJudge(tiny_rubric), trainset=silent)
    assert any("rationale is empty" in str(w.message) for w in caught)
    assert judge.memory.counts() == {"correctness": 6}


def test_reflection_failure_is_retried_smaller_then_reported(tiny_rubric, labels):
    sizes = []

    def fragile(prompt):
        n = len(re.findall(r"\[E\d+\] expert score", prompt))
        sizes.append(n)
        if n > 2:
            return "the context window was exceeded"
        if "Bananas explain" in prompt:
            return "{broken json"
        return Reflector(extra=())(prompt)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # cited mode: under "auto" a failed first batch is a trial, not retried in halves
        judge = MemAlign(reflection_lm=scripted_lm(fragile), batch_examples=6,
                         reflection="cited").compile(RubricJudge(tiny_rubric), trainset=labels)
    rep = judge.report.dimensions[0]
    assert sizes[0] == 6 and min(sizes) == 1
    assert rep.unprocessed_examples == 1  # the one whose answer always breaks the JSON
    assert [g.text for g in judge.judges["correctness"].guidelines] == [BANANA_RULE]


def test_align_entry_point_uses_the_program_lm(tiny_rubric, labels):
    reflect_and_judge = scripted_lm(lambda p: Reflector()(p) if "expert score" in p
                                    else banana_judge(p))
    judge = align(RubricJudge(tiny_rubric, lm=reflect_and_judge), labels)
    assert [g.text for g in judge.judges["correctness"].guidelines] == [BANANA_RULE]
    assert judge(answer="banana", dimensions=["correctness"])["correctness"].score == 1


def test_validation_rejects_a_guideline_that_hurts_agreement(tiny_rubric, labels):
    # Validation judges examples the guideline does not come from: the harmful rule cites s1
    # only, and hurts on the held-out s2/s3 (correct answers scored 1 instead of 3).
    harmful = "Answers about correct physics, water or photosynthesis are wrong."

    def reflect(prompt):
        ids = re.findall(r"\[(E\d+)\] expert score: \S+\nexpert rationale: ([^\n]*)", prompt)
        banana = [e for e, r in ids if "anana" in r]
        correct = [e for e, r in ids if r.startswith("Correct")]
        return {"guidelines": [{"text": BANANA_RULE, "sources": banana},
                               {"text": harmful, "sources": correct[:1]}]}

    def judge_lm(prompt):
        if harmful in prompt and "banana" not in judged_answer(prompt).lower():
            return {"score": "1", "rationale": "the harmful rule says so"}
        return banana_judge(prompt)

    lm = scripted_lm(judge_lm)
    opt = MemAlign(reflection_lm=scripted_lm(reflect), validate=True, validation_budget=40)
    judge = opt.compile(RubricJudge(tiny_rubric, lm=lm), trainset=labels)
    dim = judge.judges["correctness"]
    assert [g.text for g in dim.guidelines] == [BANANA_RULE]
    assert (harmful, "failed_validation") in [(g.text, g.reason) for g in dim.rejected]
    bad = next(g for g in dim.rejected if g.text == harmful)
    assert bad.validation[1] > bad.validation[0]  # the error on held-out examples grew
    rep = judge.report.dimensions[0]
    assert rep.validation_calls > 0 and rep.validation_calls <= 40
    assert rep.rejected.get("failed_validation") == 1
    unvalidated = MemAlign(reflection_lm=scripted_lm(reflect), validate=True,
                           validation_budget=0).compile(RubricJudge(tiny_rubric, lm=lm),
                                                        trainset=labels)
    assert unvalidated.report.dimensions[0].unvalidated == 2
    assert unvalidated.report.dimensions[0].validation_calls == 0


def test_one_bad_proposal_is_rejected_alone_without_retrying_the_batch(tiny_rubric, labels):
    # What SmolLM2-135M really answers: a runaway sentence, and ids that are not example ids.
    runaway = "1. " + "1." * 400
    sizes = []

    def sloppy(prompt):
        sizes.append(len(re.findall(r"\[E\d+\] expert score", prompt)))
        answer = Reflector(extra=())(prompt)
        answer["guidelines"] += [{"text": runaway, "sources": ["E1"]},
                                 {"text": "readmission_risk.csv", "sources": ["#cell 1, markdown"]}]
        return answer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        judge = MemAlign(reflection_lm=scripted_lm(sloppy), batch_examples=6).compile(
            RubricJudge(tiny_rubric), trainset=labels)
    rep = judge.report.dimensions[0]
    assert sizes == [6]  # one call: the parse succeeded, nothing was split
    assert rep.proposed == 3 and rep.kept == 1 and rep.unprocessed_examples == 0
    assert rep.rejected == {"too_long": 1, "no_sources": 1}
    assert [g.text for g in judge.judges["correctness"].guidelines] == [BANANA_RULE]
    assert {g.reason for g in judge.judges["correctness"].rejected} == {"too_long", "no_sources"}


# --- reflection modes (issue 14) ---------------------------------------------------------------

LONG_ROWS = [  # rationales long enough to be extracted (MIN_UNIT_CHARS)
    ("b1", "A banana is the answer to the energy question.", 1,
     "The answer mentions a banana, which makes it wrong."),
    ("b2", "Bananas explain why the sky looks blue.", 1,
     "Again the answer mentions a banana and so it is wrong."),
    ("b3", "The banana theory of gravity holds.", 1,
     "Banana nonsense: an answer that mentions a banana is wrong."),
    ("s1", "The sky is blue because of Rayleigh scattering of sunlight.", 3,
     "Correct physics, stated precisely and without errors."),
    ("s2", "Water boils at 100 degrees Celsius at sea level.", 3,
     "Correct and precise physics with the right numbers."),
    ("s3", "Photosynthesis turns light, water and CO2 into sugar.", 3,
     "Correct biology, stated precisely and without errors."),
]


class SmallReflector:
    """A scripted reflection LM that cannot cite (what SmolLM2-135M does with a cited batch)
    but writes one sentence for one example or pair when it can (``per_example=True``)."""

    def __init__(self, per_example: bool = True):
        self.per_example = per_example
        self.cited_prompts: list[str] = []
        self.single_prompts: list[str] = []

    def __call__(self, prompt: str):
        if re.search(r"\[E1\] expert score", prompt):
            self.cited_prompts.append(prompt)
            return {"guidelines": [{"text": "guidelines", "sources": ["examples"]}]}
        self.single_prompts.append(prompt)
        if not self.per_example:
            return {"guideline": "E1"}
        rationales = re.findall(r"expert rationale: ([^\n]*)", prompt)
        if any("anana" in r for r in rationales):
            return {"guideline": BANANA_RULE}
        return {"guideline": "Correct physics or biology answers, stated precisely, are right."}


def test_auto_switches_to_per_example_when_the_reflection_lm_cannot_cite(tiny_rubric, labels):
    clarity = label_rows([("c1", "Banana banana banana, and so on.", 1, "Confusing banana talk."),
                          ("c2", "Light is fast.", 3, "Crisp and clear.")], "clarity")
    both = LabelSet.from_records(label_rows() + clarity, rubric=tiny_rubric)
    small = SmallReflector()
    small_lm = scripted_lm(small)
    judge = MemAlign(reflection_lm=small_lm, max_reflection_calls=2).compile(
        RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge)), trainset=both)
    rep = {r.dimension: r for r in judge.report.dimensions}
    # one cited trial in all: after it cited nothing, the next dimension skips it
    assert len(small.cited_prompts) == 1
    assert rep["correctness"].modes == ["cited", "per-example"]
    # No cited trial on clarity; its per-example rule (the banana rule, about correctness) is
    # not what the clarity experts wrote, so the extractive floor follows.
    assert rep["clarity"].modes == ["per-example", "extractive"]
    assert rep["correctness"].rejected.get("no_sources") == 1
    # 3 contrasting (banana, correct) pairs; max_reflection_calls=2 leaves one pair out
    assert rep["correctness"].reflection_calls == 1 + 2
    assert rep["correctness"].unprocessed_examples == 2
    rule = next(g for g in judge.judges["correctness"].guidelines if g.text == BANANA_RULE)
    assert rule.mode == "per-example"
    assert len(rule.sources) == 4  # its two pairs (the duplicate merged its sources in)
    assert {s[0] for s in rule.sources} == {"b", "s"}
    assert rep["correctness"].kept_by_mode == {"per-example": 1}
    # validated on the pair it does not come from: one banana answer goes from 3 to 1
    assert rule.validation == (1.0, 0.0)
    # per-example prompts are short: one pair, a brief rubric, excerpts of the items
    assert all(len(p) // 4 < 700 for p in small.single_prompts)
    assert all(len(re.findall(r"expert score:", p)) == 2 for p in small.single_prompts)
    # a later compile starts afresh: it tries citing again (same inputs, same judge)
    again = MemAlign(reflection_lm=small_lm, max_reflection_calls=2).compile(
        RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge)), trainset=both)
    assert len(small.cited_prompts) == 2
    assert again.dump_state()["dimensions"] == judge.dump_state()["dimensions"]


def test_explicit_per_example_mode_never_sends_a_cited_batch(tiny_rubric, labels):
    small = SmallReflector()
    judge = MemAlign(reflection_lm=scripted_lm(small), reflection="per-example").compile(
        RubricJudge(tiny_rubric), trainset=labels)
    rep = judge.report.dimensions[0]
    assert not small.cited_prompts and len(small.single_prompts) == 3
    assert rep.modes == ["per-example"] and rep.reflection_calls == 3
    kept = judge.judges["correctness"].guidelines
    assert BANANA_RULE in [g.text for g in kept]
    assert all(g.mode == "per-example" for g in kept)
    assert rep.unvalidated == len(kept)  # the judge has no LM of its own: nothing to validate


def test_a_rambling_per_example_answer_keeps_its_first_sentences(tiny_rubric, labels):
    def rambling(prompt):
        return {"guideline": f"1. Guideline: {BANANA_RULE} (Example A) " + "And so on. " * 40}

    judge = MemAlign(reflection_lm=scripted_lm(rambling), reflection="per-example").compile(
        RubricJudge(tiny_rubric), trainset=labels)
    assert [g.text for g in judge.judges["correctness"].guidelines] == [BANANA_RULE]


def test_auto_falls_back_to_extractive_guidelines_without_warning(tiny_rubric):
    rows = label_rows(LONG_ROWS)
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    small = SmallReflector(per_example=False)
    prompts = []

    def judge_lm(prompt):
        prompts.append(prompt)
        return banana_judge(prompt)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        judge = MemAlign(reflection_lm=scripted_lm(small)).compile(
            RubricJudge(tiny_rubric, lm=scripted_lm(judge_lm)), trainset=labels)
    assert not [w for w in caught if "no guideline" in str(w.message)]
    rep = judge.report.dimensions[0]
    assert rep.modes == ["cited", "per-example", "extractive"]
    assert rep.rejected.get("too_short") == 3  # "E1" for each of the three pairs
    kept = judge.judges["correctness"].guidelines
    assert kept and rep.kept_by_mode == {"extractive": len(kept)}
    by_item = {i: (s, r) for i, _, s, r in LONG_ROWS}
    for g in kept:
        assert g.mode == "extractive"
        assert any(g.text in by_item[s][1] for s in g.sources)  # an expert's own sentence
        assert {str(by_item[s][0]) for s in g.sources} == {g.scores}
    assert {g.scores for g in kept} == {"1", "3"}  # both score levels get a say
    judge(answer="Bananas again.", dimensions=["correctness"])
    assert f"{kept[0].text} (experts scored {kept[0].scores})" in prompts[-1]


def test_a_warning_only_when_even_extractive_keeps_nothing(tiny_rubric):
    silent = LabelSet.from_records([dict(r, rationale="") for r in label_rows()],
                                   rubric=tiny_rubric)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        judge = MemAlign(reflection_lm=scripted_lm(SmallReflector(per_example=False))).compile(
            RubricJudge(tiny_rubric), trainset=silent)
    rep = judge.report.dimensions[0]
    assert rep.modes == ["cited", "per-example", "extractive"]
    assert rep.warning and "cited then per-example then extractive kept nothing" in rep.warning
    assert any(rep.warning == str(w.message) for w in caught)


def test_unknown_reflection_mode_is_refused():
    with pytest.raises(ValueError, match="reflection must be one of auto, cited"):
        MemAlign(reflection="clever")


def test_per_example_answers_that_are_no_rule_are_rejected_and_trailing_junk_is_cut(
        tiny_rubric):
    """What SmolLM2-135M wrote in per-example calls on the notebooks (BENCHMARKS.md,
    align_notebooks) and an earlier screen kept: an item's title cut off, a list of markers,
    a sentence followed by an enumeration. The grounding evidence is the experts' words when
    they wrote any, so a fragment copied from the item's own text is not 'grounded'."""
    from judgealign.optimizers.memalign import _clean_guideline

    assert _clean_guideline("Cell 4 imports everything, but nothing pins the versions of "
                            "mlflow. 1. Example A. 2. Example B. 3. 4. 5.") == (
        "Cell 4 imports everything, but nothing pins the versions of mlflow.")
    assert _clean_guideline("Two sentences here are fine. Both are prose sentences.") == (
        "Two sentences here are fine. Both are prose sentences.")
    rows = [("t1", "Bike sharing demand: predict hourly rentals with a random forest.", 1,
             "The forest is tuned on the test split, so its score is optimistic."),
            ("t2", "Bike sharing demand: predict rentals with a tuned ridge model.", 3,
             "Tuning uses cross-validation on the training rows only; the test set is untouched.")]
    answers = iter(["Bike sharing demand: predi",
                    "## example #1 #2 #3 #4 #5 #6 #7 #8 #9 #10 #11 #12 #13 #14",
                    "Bike sharing demand: predict hourly rentals with a random forest."])

    def reflector(prompt):
        return {"guideline": next(answers, "Tuning on the test split makes the score "
                                           "optimistic; tune with cross-validation.")}

    trainset = LabelSet.from_records(label_rows(rows), rubric=tiny_rubric)
    for n in range(3):
        judge = MemAlign(reflection_lm=scripted_lm(reflector), reflection="per-example",
                         validate=False).compile(
            RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge)), trainset=trainset)
        djudge = judge.judges["correctness"]
        rejected = {g.text: g.reason for g in djudge.rejected}
        assert not djudge.guidelines, [g.text for g in djudge.guidelines]
        assert list(rejected.values()) == [("too_short", "too_short", "ungrounded")[n]]
    # A rule in the experts' own terms is kept, with the pair as its sources.
    judge = MemAlign(reflection_lm=scripted_lm(reflector), reflection="per-example",
                     validate=False).compile(
        RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge)), trainset=trainset)
    kept = judge.judges["correctness"].guidelines
    assert [g.mode for g in kept] == ["per-example"] and set(kept[0].sources) == {"t1", "t2"}
