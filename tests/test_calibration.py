"""Calibration fitted by MemAlign on the training labels (issue 13, items 3 and 5): it corrects
a biased judge, falls back to the prior for a judge without signal, never sees the label it
is fitted against, survives a save/load, refuses edited numbers and forgets with unalign."""

from __future__ import annotations

import copy
import json
import re

import pytest

import judgealign
from judgealign import build
from judgealign.adapter import judged_text, shown_examples
from judgealign.calibration import (
    MIN_LABELS,
    Calibration,
    Row,
    calibration_sample,
    level_labels,
)
from judgealign.config import load_config
from judgealign.errors import ConfigError
from judgealign.labels import LabelSet, aggregate
from judgealign.optimizers.memalign import MemAlign
from judgealign.program import DimensionJudge, RubricJudge
from judgealign.testing import scripted_lm, with_levels

WORDS = ["river", "copper", "lantern", "meadow", "quartz", "harbor", "violet", "canyon",
         "saddle", "ember", "glacier", "thimble", "orchard", "falcon", "pepper", "marble"]


def text_of(i: int) -> str:
    """An answer whose words do not depend on its label (retrieval carries no signal)."""
    return " ".join(WORDS[(i * k + 3) % len(WORDS)] for k in (1, 3, 5, 7)) + f" case {i}"


def rows_for(items: list[tuple[str, str, int]], dimension: str = "correctness"
             ) -> list[dict]:
    return [{"item_id": i, "inputs": {"answer": a}, "dimension": dimension, "score": s,
             "rationale": f"expert note {i}"} for i, a, s in items]


def truth_in(prompt: str) -> int:
    """The true level the scripted judge is given, hidden in the judged item's text."""
    return int(re.search(r"\[truth (\d)\]", judged_text(prompt, "answer")).group(1))


def one_too_high(prompt: str):
    """A judge with a perfect ranking and a bias: always one level too high."""
    high = truth_in(prompt) + 1
    dist = {"1": 0.05, "2": 0.05, "3": 0.05}
    dist[str(high)] = 0.7
    dist[str(high - 1)] = 0.25
    return with_levels({"score": str(high), "rationale": "looks fine"}, dist)


def biased_items(n: int, start: int = 0) -> list[tuple[str, str, int]]:
    out = []
    for i in range(start, start + n):
        level = 1 + i % 2
        out.append((f"t{i:03d}", f"{text_of(i)} [truth {level}]", level))
    return out


def mae(judge: RubricJudge, items: list[tuple[str, str, int]], dim: str = "correctness"
        ) -> float:
    results = judge.batch([{"answer": a} for _, a, _ in items], dimensions=[dim])
    errors = [abs(r[dim].score - s) for r, (_, _, s) in zip(results, items, strict=True)]
    return sum(errors) / len(errors)


def calibrate(rubric, items, respond, **options):
    labels = LabelSet.from_records(rows_for(items), rubric=rubric)
    student = RubricJudge(rubric, lm=scripted_lm(respond))
    return MemAlign(semantic=False, policy="calibrated", k=3, **options).compile(
        student, trainset=labels)


# --- the acceptance cases -----------------------------------------------------------------


def test_a_judge_one_level_too_high_is_corrected_on_held_out_items(tiny_rubric):
    train, held_out = biased_items(24), biased_items(10, start=100)
    judge = calibrate(tiny_rubric, train, one_too_high)
    cal = judge.judges["correctness"].calibration
    assert cal.kind == "logistic", cal.reason
    assert cal.cv_mae["logistic"] < min(cal.cv_mae["prior"], cal.cv_mae["identity"])
    assert mae(judge, held_out) == 0.0
    result = judge(answer=held_out[0][1], dimensions=["correctness"])["correctness"]
    assert result.policy == "calibrated" and result.sampled_score == result.score + 1
    assert sum(result.calibrated.values()) == pytest.approx(1.0)
    assert set(result.neighbours) == {"1", "2", "3"}  # the second feature it was fitted on
    judge.set_policy("sampled")
    assert mae(judge, held_out) == 1.0  # what the LM writes is one level off


def test_a_judge_with_no_signal_calibrates_to_the_prior(tiny_rubric):
    items = [(f"n{i:03d}", text_of(i), 1 if i % 3 == 0 else 3) for i in range(24)]

    def no_signal(prompt):
        return with_levels({"score": "2", "rationale": "hmm"}, {"1": 0.3, "2": 0.4, "3": 0.3})

    judge = calibrate(tiny_rubric, items, no_signal)
    cal = judge.judges["correctness"].calibration
    assert cal.kind == "prior", cal.reason
    assert "no better" in cal.reason
    constant = aggregate([s for _, _, s in items])  # the `constant` reference predictor
    held_out = [(f"h{i}", text_of(i + 50), constant) for i in range(6)]
    assert mae(judge, held_out) == 0.0
    assert dict(zip(cal.labels, cal.prior, strict=True)) == pytest.approx(
        {"1": 8 / 24, "2": 0.0, "3": 16 / 24})


def test_a_capped_calibration_judges_only_its_sample_and_still_corrects(tiny_rubric):
    train, held_out = biased_items(40), biased_items(10, start=100)
    judged: list[str] = []

    def counting(prompt):
        judged.append(judged_text(prompt, "answer"))
        return one_too_high(prompt)

    judge = calibrate(tiny_rubric, train, counting, calibration_items=16)
    calibration_judged = list(judged)
    rep = judge.report.dimensions[0]
    assert rep.calibration_calls == len(calibration_judged) == 16
    cal = judge.judges["correctness"].calibration
    assert cal.kind == "logistic", cal.reason
    assert mae(judge, held_out) == 0.0
    # The sample is the seeded hash ranking's, the same for any item set holding those items.
    chosen = calibration_sample([i for i, _, _ in train], 16)
    assert sorted(calibration_judged) == sorted(a for i, a, _ in train if i in chosen)
    # Any item set holding the chosen items gets them again; another seed draws others.
    assert calibration_sample([i for i, _, _ in train[:30]] + chosen, 16) == chosen
    assert calibration_sample([i for i, _, _ in train], 16, seed=1) != chosen
    assert calibration_sample(["b", "a"], None) == ["a", "b"]
    with pytest.raises(ValueError, match="calibration_items"):
        MemAlign(calibration_items=0)


def test_too_few_labels_fit_nothing_and_score_as_expected(tiny_rubric):
    judge = calibrate(tiny_rubric, biased_items(MIN_LABELS - 1), one_too_high)
    cal = judge.judges["correctness"].calibration
    assert cal.kind == "none" and f"at least {MIN_LABELS}" in cal.reason
    result = judge(answer="x [truth 1]", dimensions=["correctness"])["correctness"]
    assert result.policy == "expected" and result.calibrated is None


# --- leakage ------------------------------------------------------------------------------


def copies_a_matching_demo(prompt: str):
    """Leaks when it can: answers the score of a demo showing the very same answer."""
    item = judged_text(prompt, "answer")
    for text, score in shown_examples(prompt, "answer"):
        if text == item and score:
            return {"score": score, "rationale": "seen it"}
    return {"score": "2", "rationale": "no idea"}


def twin_items() -> list[tuple[str, str, int]]:
    """Pairs of items with identical inputs and the same label, under different ids."""
    items = []
    for i in range(10):
        level = 1 if i % 2 else 3
        items += [(f"a{i:02d}", text_of(i), level), (f"b{i:02d}", text_of(i), level)]
    return items


def test_training_features_never_see_the_items_own_label(tiny_rubric):
    items = twin_items()
    judge = calibrate(tiny_rubric, items, copies_a_matching_demo)
    cal = judge.judges["correctness"].calibration
    twins = {i: {j for j, a, _ in items if a == text} for i, text, _ in items}
    assert len(cal.rows) == len(items)
    for row in cal.rows:
        assert row.retrieved and not set(row.retrieved) & twins[row.item_id]
        # It never found its own answer among the demos, so it never copied a label...
        assert row.probabilities == (0.0, 1.0, 0.0)
    # ...whereas a judge that saw its own label would be perfect on its training features.
    assert cal.cv_mae["identity"] > 0 and cal.kind != "identity"


def test_the_leakage_test_catches_a_judge_that_sees_its_label(tiny_rubric, monkeypatch):
    forward = DimensionJudge.forward

    def leaky(self, *, _exclude=frozenset(), **kwargs):
        return forward(self, **kwargs)  # drops the exclusion

    monkeypatch.setattr(DimensionJudge, "forward", leaky)
    cal = calibrate(tiny_rubric, twin_items(), copies_a_matching_demo).judges[
        "correctness"].calibration
    assert cal.cv_mae["identity"] == 0 and cal.kind == "identity"


# --- cost, incremental compiles, state ------------------------------------------------------


def test_the_extra_judge_calls_are_counted(tiny_rubric):
    items = biased_items(12)
    labels = LabelSet.from_records(rows_for(items), rubric=tiny_rubric)
    lm = scripted_lm(one_too_high)
    judge = MemAlign(semantic=False, policy="calibrated").compile(
        RubricJudge(tiny_rubric, lm=lm), trainset=labels)
    rep = judge.report.dimensions[0]
    assert rep.calibration_calls == len(items) == lm.engine.calls
    assert rep.lm_calls == rep.calibration_calls and judge.report.lm_calls == len(items)
    assert rep.calibration["kind"] == judge.judges["correctness"].calibration.kind
    assert judge.report.settings["policy"] == "calibrated"
    again = MemAlign(semantic=False, policy="calibrated").compile(judge, trainset=labels)
    assert again.report.lm_calls == 0 and lm.engine.calls == len(items)  # nothing new
    assert again.judges["correctness"].calibration == judge.judges["correctness"].calibration
    more = LabelSet.from_records(rows_for(items + biased_items(2, start=40)),
                                 rubric=tiny_rubric)
    grown = MemAlign(semantic=False, policy="calibrated").compile(judge, trainset=more)
    assert grown.report.dimensions[0].calibration_calls == 14  # all rows, with new memory
    assert len(grown.judges["correctness"].calibration.rows) == 14


def test_without_the_calibrated_policy_nothing_is_fitted(tiny_rubric):
    labels = LabelSet.from_records(rows_for(biased_items(12)), rubric=tiny_rubric)
    lm = scripted_lm(one_too_high)
    judge = MemAlign(semantic=False, policy="sampled").compile(
        RubricJudge(tiny_rubric, lm=lm), trainset=labels)
    assert lm.engine.calls == 0 and judge.judges["correctness"].calibration is None
    assert {j.policy for j in judge.judges.values()} == {"sampled"}


def test_a_calibration_round_trips_through_a_saved_judge(tiny_rubric, tmp_path):
    train, held_out = biased_items(24), biased_items(6, start=200)
    judge = calibrate(tiny_rubric, train, one_too_high)
    judge.save(tmp_path / "judge")
    program = json.loads((tmp_path / "judge" / "program.json").read_text())
    saved = program["dimensions"]["correctness"]["calibration"]
    assert saved["kind"] == "logistic" and len(saved["rows"]) == 24
    loaded = judgealign.load(tmp_path / "judge", lm=scripted_lm(one_too_high))
    assert loaded.judges["correctness"].calibration == judge.judges["correctness"].calibration
    assert loaded.judges["clarity"].calibration is None  # no labels for clarity
    assert {j.policy for j in loaded.judges.values()} == {"calibrated"}
    assert mae(loaded, held_out) == 0.0


TAMPERINGS = {
    "a coefficient": lambda c: c["coef"][0].__setitem__(0, c["coef"][0][0] + 0.01),
    "an intercept": lambda c: c["intercept"].__setitem__(0, c["intercept"][0] - 0.5),
    "a feature of a row": lambda c: c["rows"][0]["probabilities"].__setitem__(
        0, c["rows"][0]["probabilities"][0] + 0.1),
    "a row's label": lambda c: c["rows"][0].__setitem__(
        "label", "2" if c["rows"][0]["label"] == "1" else "1"),
    "the prior": lambda c: c["prior"].__setitem__(0, c["prior"][0] + 0.01),
    "the kind": lambda c: c.__setitem__("kind", "prior"),
    "a CV error": lambda c: c["cv_mae"].__setitem__("logistic", 5.0),
    "not a number": lambda c: c["coef"][0].__setitem__(0, float("nan")),
    "the levels": lambda c: c.__setitem__("labels", ["1", "2", "3", "N/A"]),
}


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_tampered_calibration_numbers_are_refused(tiny_rubric, case):
    judge = calibrate(tiny_rubric, biased_items(24), one_too_high)
    state = judge.dump_state()
    RubricJudge(tiny_rubric).load_state(copy.deepcopy(state))  # the untouched state loads
    TAMPERINGS[case](state["dimensions"]["correctness"]["calibration"])
    fresh = RubricJudge(tiny_rubric)
    with pytest.raises(ValueError, match=r"dimensions\.correctness\.calibration"):
        fresh.load_state(state)
    assert fresh.judges["correctness"].calibration is None  # nothing was applied


def test_unalign_refits_without_any_trace_of_the_forgotten_items(tiny_rubric):
    judge = calibrate(tiny_rubric, biased_items(24), one_too_high)
    before = judge.judges["correctness"].calibration
    gone = {"t000", "t005"}
    touched = {r.item_id for r in before.rows if gone & ({r.item_id} | set(r.retrieved))}
    after = judge.unalign(gone).judges["correctness"].calibration
    assert after is not None and after.fitted and "refitted" in after.reason
    assert {r.item_id for r in after.rows} == {r.item_id for r in before.rows} - touched
    assert not any(gone & ({r.item_id} | set(r.retrieved)) for r in after.rows)
    assert after.coef != before.coef
    assert judge.judges["correctness"].calibration is before  # the original is untouched
    everything = judge.unalign({r.item_id for r in before.rows})
    assert everything.judges["correctness"].calibration is None


def test_a_perfect_judge_with_na_labels_is_left_as_it_is():
    labels = level_labels([1, 2, 3], allows_na=True)
    truth = ["N/A" if i % 4 == 0 else str(1 + i % 3) for i in range(12)]
    rows = [Row(f"r{i}", lab, tuple(0.9 if x == lab else 0.1 / 3 for x in labels),
                (0.0, 0.0, 0.0, 0.0), (), f"g{i}") for i, lab in enumerate(truth)]
    cal = Calibration.fit(rows, labels, [1, 2, 3])
    assert cal.kind == "identity" and cal.cv_mae["identity"] == 0.0
    assert cal.point(cal.distribution({"1": 0.2, "N/A": 0.8})) == "N/A"
    assert cal.point(cal.distribution({"1": 0.6, "N/A": 0.4})) == "1"
    same = Calibration.from_state(json.loads(json.dumps(cal.to_state())), labels, [1, 2, 3])
    assert same == cal


# --- configuration and CV variants ----------------------------------------------------------


def test_the_policy_is_configured_in_scoring():
    assert load_config(environ={}).scoring.policy == "calibrated"
    settings = load_config(environ={"JUDGEALIGN_SCORING__POLICY": "expected"})
    judge = build.program("ml_notebook", settings)
    assert {j.policy for j in judge.judges.values()} == {"expected"}
    assert build.optimizer(settings, "memalign-sampled").policy == "sampled"
    assert build.optimizer(settings, "memalign").policy == "expected"
    with pytest.raises(ConfigError, match="scoring.policy"):
        load_config(environ={}, overrides={"scoring": {"policy": "argmax"}})


@pytest.mark.filterwarnings("ignore:no guideline")  # the scripted reflection proposes none
def test_cv_memalign_calibrates_and_memalign_sampled_keeps_the_written_score(tiny_rubric):
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions

    labels = LabelSet.from_records(rows_for(biased_items(32)), rubric=tiny_rubric)
    lm = scripted_lm(one_too_high)
    result = cross_validate(tiny_rubric, labels, load_config(environ={}),
                            CVOptions(variants=("baseline", "memalign", "memalign-sampled"),
                                      folds=2, n_bootstrap=200, progress=False), lm=lm,
                            reflection_lm=scripted_lm(lambda p: {"guidelines": []}))
    mae_of = {v: result.mae_of(v, "correctness")["mae"] for v in result.rows}
    assert mae_of["memalign"] == 0.0
    assert mae_of["memalign-sampled"] == 1.0 and mae_of["baseline"] == 1.0
    for (variant, _), report in result.align_reports.items():
        dims = {d["dimension"]: d for d in report["dimensions"]}
        if variant == "memalign":
            assert report["settings"]["policy"] == "calibrated"
            assert dims["correctness"]["calibration"]["kind"] == "logistic"
            assert dims["correctness"]["calibration_calls"] == 16
        else:
            assert report["settings"]["policy"] == "sampled"
            assert dims["correctness"]["calibration"] is None
    costs = result.cost_totals()
    assert costs["memalign"]["align_calls"] > costs["memalign-sampled"]["align_calls"]
    from judgealign.evaluation.report import render_markdown

    assert ("- score policy: baseline calibrated (nothing fitted: scored as expected); "
            "memalign calibrated (calibrations per dimension and fold: logistic 2); "
            "memalign-sampled sampled") in render_markdown(result, figure=None)
