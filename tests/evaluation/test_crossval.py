"""Tests of judgealign.evaluation.crossval and its run loop (folds aligned through
``judgealign.build``, leakage guard, DSPy baselines) and of the ``cv``/``demo`` runner, with
scripted LMs on the tiny rubric."""

from __future__ import annotations

import json
import warnings

import pytest
from cv_cases import (
    banana_labels,
    judge_responder,
    lms,
    reflection_responder,
    run,
)

from judgealign import build
from judgealign.adapter import judged_text, shown_examples
from judgealign.config import MemorySettings, Settings
from judgealign.evaluation.crossval import cross_validate
from judgealign.evaluation.leakage import LeakageError, check_no_leakage
from judgealign.evaluation.options import CVOptions, CVOptionsError
from judgealign.labels import LabelSet
from judgealign.memory.semantic import Guideline
from judgealign.program import RubricJudge
from judgealign.testing import TINY_RUBRIC, scripted_lm


def test_every_item_is_judged_once_per_variant_and_stays_whole(tiny_rubric):
    labels = banana_labels(tiny_rubric)
    result = run(tiny_rubric, labels)
    for variant in result.rows:
        if variant == "human":
            continue
        seen = [(r.item_id, r.dimension) for r in result.records if r.variant == variant]
        assert sorted(seen) == sorted((e.item_id, e.dimension) for e in labels.episodes())
    for r in result.records:  # all dimensions of an item in its one fold
        assert r.fold == result.folds[r.item_id]
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["folds"] == result.folds


# --- each fold is what align would build ------------------------------------------------------


def test_each_fold_aligns_through_build_compile_on_its_training_items_only(tiny_rubric,
                                                                           monkeypatch):
    labels = banana_labels(tiny_rubric)
    calls: list[tuple[str, set[str], str]] = []
    real = build.compile

    def recording(program, train, settings, **kwargs):
        calls.append((kwargs["variant"], set(train.item_ids), settings.memory.model_dump_json()))
        return real(program, train, settings, **kwargs)

    monkeypatch.setattr(build, "compile", recording)
    settings = Settings(memory=MemorySettings(max_guidelines=5, k=2))
    result = run(tiny_rubric, labels, settings, folds=4,
                 variants=("baseline", "memalign", "episodic-only"))
    assert [c[0] for c in calls] == ["memalign", "episodic-only"] * 4  # baseline: not aligned
    everything = set(labels.item_ids)
    for n, (_, trained_on, memory) in enumerate(calls):  # folds run in order
        held_out = {i for i, f in result.folds.items() if f == n // 2}
        assert held_out and trained_on == everything - held_out
        assert memory == settings.memory.model_dump_json()  # the user's settings, as given


def test_a_fold_compiles_the_same_state_as_align(tiny_rubric, monkeypatch):
    """For the same settings and training items, ``align`` and a CV fold build the same judge
    (guidelines, episodes, options); only the compile report's timings may differ."""
    from judgealign.api import align

    labels = banana_labels(tiny_rubric)
    compiled: list = []
    real = build.compile

    def keep(program, train, settings, **kwargs):
        judge = real(program, train, settings, **kwargs)
        compiled.append((judge.dump_state(), set(train.item_ids)))
        return judge

    monkeypatch.setattr(build, "compile", keep)

    def both(prompt):  # one LM judges and reflects, as when [reflection_lm] is not set
        return reflection_responder(prompt) if "expert rationale:" in prompt \
            else judge_responder(prompt)

    judge_lm = scripted_lm(both, name="scripted/both")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cross_validate(tiny_rubric, labels, Settings(),
                       CVOptions(variants=("memalign",), references=(), folds=3,
                                 n_bootstrap=50, progress=False), lm=judge_lm)
    assert len(compiled) == 3
    monkeypatch.setattr(build, "compile", real)
    for state, train_ids in compiled:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shipped = align(build.program(tiny_rubric, Settings(), lm=judge_lm),
                            labels.subset(train_ids), config=Settings())
        ours, theirs = dict(state), shipped.dump_state()
        ours.pop("report"), theirs.pop("report")
        assert ours == theirs
        assert any(g["text"] for d in ours["dimensions"].values() for g in d["guidelines"])


# --- leakage ----------------------------------------------------------------------------------


def test_an_alignment_that_peeks_at_held_out_items_is_stopped(tiny_rubric, monkeypatch):
    labels = banana_labels(tiny_rubric)
    real = build.compile

    def peeking(program, train, settings, **kwargs):
        return real(program, labels, settings, **kwargs)  # every label, held-out ones too

    monkeypatch.setattr(build, "compile", peeking)
    with pytest.raises(LeakageError, match="held-out items reached the aligned judge"):
        run(tiny_rubric, labels)


def test_leakage_guard_looks_at_guidelines_seen_episodes_and_training_ids(tiny_rubric):
    judge = RubricJudge(tiny_rubric)
    check_no_leakage(judge, ["i01"])
    judge.judges["correctness"].set_guidelines([Guideline("x", "correctness", ("i01",))])
    with pytest.raises(LeakageError, match="guideline sources: i01"):
        check_no_leakage(judge, ["i01", "i02"])
    judge = RubricJudge(tiny_rubric)
    judge.seen["i02::clarity"] = "abc"
    with pytest.raises(LeakageError, match="seen episodes: i02"):
        check_no_leakage(judge, ["i02"])

    class Fitted:
        trained_on = frozenset({"i03", "i04"})

    with pytest.raises(LeakageError, match="training items: i04"):
        check_no_leakage(Fitted(), ["i04"])


# --- variants ---------------------------------------------------------------------------------


def test_dspy_fewshot_baselines_run_and_show_training_demos_only(tiny_rubric):
    labels = banana_labels(tiny_rubric)
    prompts: list[str] = []

    def recording_judge(prompt):
        prompts.append(prompt)
        return judge_responder(prompt)

    judge_lm = scripted_lm(recording_judge, name="scripted/judge")
    variants = ("baseline", "labeled-fewshot", "knn-fewshot", "bootstrap-fewshot")
    result = run(tiny_rubric, labels, variants=variants,
                 lms=(judge_lm, scripted_lm(reflection_responder)))
    assert result.variants == list(variants)
    for r in result.records:
        if r.variant in ("labeled-fewshot", "knn-fewshot"):
            assert len(r.retrieved_ids) == 3  # same k as MemAlign
        # demos (and the neighbours reference's items) come from the training folds only
        assert all(result.folds[i] != r.fold for i in r.retrieved_ids)
    knn = [r for r in result.records if r.variant == "knn-fewshot"
           and r.dimension == "correctness" and "banana" in labels.items()[r.item_id]["answer"]]
    assert all("banana" in labels.items()[r.retrieved_ids[0]]["answer"] for r in knn)
    assert result.agreement[("knn-fewshot", "correctness")].mae == 0.0
    boot = [c for c in result.costs if c.variant == "bootstrap-fewshot"]
    assert all(c.align_calls > 0 for c in boot)  # it runs the judge to bootstrap demos
    shown = [shown_examples(p, "answer") for p in prompts]
    assert any(len(demos) > 1 and demos[0][1] == "1" for demos in shown)


def test_demo_texts_are_cut_to_the_settings_budget_for_every_variant(tiny_rubric):
    labels = banana_labels(tiny_rubric, 8)
    long_row = {"item_id": "long", "inputs": {"answer": "banana " + "word " * 3000},
                "dimension": "correctness", "score": 1, "rationale": "banana again"}
    labels = LabelSet([*labels, *LabelSet.from_records([long_row], rubric=tiny_rubric)])
    prompts: list[str] = []

    def recording_judge(prompt):
        prompts.append(prompt)
        return judge_responder(prompt)

    settings = Settings(memory=MemorySettings(k=8, demo_input_tokens=64))
    run(tiny_rubric, labels, settings,
        variants=("labeled-fewshot", "knn-fewshot", "episodic-only"),
        lms=(scripted_lm(recording_judge), scripted_lm(reflection_responder)))
    demo_parts = [text for p in prompts for text, _ in shown_examples(p, "answer")
                  if "word word" in text]
    assert demo_parts, "the long item was never shown as a demo"
    assert all("characters cut to fit" in part and len(part) < 1200 for part in demo_parts)


def test_unsupported_variants_are_skipped_with_the_reason(tiny_rubric):
    labels = banana_labels(tiny_rubric, 6)
    result = run(tiny_rubric, labels, variants=("baseline", "mipro", "gepa"))
    assert result.variants == ["baseline"]
    assert set(result.skipped) == {"mipro", "gepa"}
    assert "not a cv variant yet" in result.skipped["gepa"]
    assert result.to_dict()["skipped"]["mipro"].startswith("dspy.MIPROv2")
    with pytest.raises(CVOptionsError, match="unknown variant"):
        run(tiny_rubric, labels, variants=("baseline", "magic"))


def test_an_aligned_judge_is_refused(tiny_rubric):
    labels = banana_labels(tiny_rubric, 6)
    judge = RubricJudge(tiny_rubric, lm=lms()[0])
    judge.seen["i00::clarity"] = "x"
    with pytest.raises(CVOptionsError, match="unaligned judge"):
        cross_validate(judge, labels, Settings(), CVOptions(progress=False))


def test_a_fresh_judge_is_copied_per_fold_with_its_own_lm(tiny_rubric):
    labels = banana_labels(tiny_rubric, 6)
    judge_lm, _ = lms()
    judge = RubricJudge(tiny_rubric, lm=judge_lm)
    result = cross_validate(judge, labels, Settings(),
                            CVOptions(variants=("baseline",), folds=2, n_bootstrap=50,
                                      progress=False))
    assert judge_lm.engine.calls == 6 * 2 and result.settings["lm"]["model"] == "scripted/judge"
    assert judge.memory is None and not judge.seen  # the given judge is untouched


# --- failures count, end to end ---------------------------------------------------------------


def test_a_variant_that_fails_on_the_hardest_items_ranks_worse(tiny_rubric):
    """The issue's case: the LM fails on the items whose human score is 1. Left out, the
    failures would give MAE 0; charged, the failing judge is worse than one that answers."""
    rows = [{"item_id": f"h{i}", "inputs": {"answer": f"{'hard' if i < 4 else 'easy'} {i}"},
             "dimension": "correctness", "score": 1 if i < 4 else 3} for i in range(8)]
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)

    def failing(prompt):
        return "no JSON here" if "hard" in judged_text(prompt, "answer") else {
            "score": "3", "rationale": "ok"}

    def answering(prompt):
        hard = "hard" in judged_text(prompt, "answer")
        return {"score": "2" if hard else "3", "rationale": "ok"}

    out = {}
    for name, responder in (("failing", failing), ("answering", answering)):
        out[name] = run(tiny_rubric, labels, variants=("baseline",), folds=2,
                        lms=(scripted_lm(responder), scripted_lm(reflection_responder)))
    fails = out["failing"].mae_of("baseline", "correctness")
    answers = out["answering"].mae_of("baseline", "correctness")
    assert fails["n_failed"] == 4 and fails["mae_scored"] == 0.0  # what the old table showed
    assert fails["mae"] == pytest.approx(1.0) and answers["mae"] == pytest.approx(0.5)
    assert fails["n"] == answers["n"] == 8  # the bootstrap sees every item


# --- the cv / demo commands -------------------------------------------------------------------


def _cv_files(tmp_path, tiny_rubric):
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text("\n".join(
        json.dumps({"item_id": e.item_id, "inputs": e.inputs, "dimension": e.dimension,
                    "score": e.score, "rationale": e.rationale})
        for e in banana_labels(tiny_rubric, 8).episodes()), encoding="utf-8")
    rubric_path = tmp_path / "tiny.yaml"
    rubric_path.write_text(json.dumps(TINY_RUBRIC), encoding="utf-8")  # JSON is YAML
    return rubric_path, labels_path


def test_cv_command_builds_through_build_and_writes_the_report(tiny_rubric, tmp_path,
                                                               monkeypatch, capsys):
    from judgealign import cli

    rubric_path, labels_path = _cv_files(tmp_path, tiny_rubric)
    judge_lm, _ = lms()
    built = []

    def judge_lm_of(settings):
        built.append(settings.lm.model)
        return judge_lm

    monkeypatch.setattr(build, "judge_lm", judge_lm_of)
    monkeypatch.setattr(build, "reflection_lm", lambda settings, program=None: lms()[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main(["cv", "--rubric", str(rubric_path), "--labels", str(labels_path),
                         "--folds", "2", "--bootstrap", "200", "--out", str(tmp_path / "rep")])
    assert code == 0 and built == ["local"]  # the judge LM came from build, once
    out = capsys.readouterr().out
    assert "memalign" in out and "95% CI" in out and "report.md" in out
    assert "constant" in out and "neighbours" in out  # the reference rows
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"report.md", "results.json",
                                                              "mae.png", "folds"}


def test_cv_command_refuses_bad_options_before_reading_anything(tiny_rubric, tmp_path,
                                                                monkeypatch, capsys):
    from judgealign.evaluation.runner import run_cv_command

    rubric_path, labels_path = _cv_files(tmp_path, tiny_rubric)
    (tmp_path / "taken").write_text("a file")

    def no_build(settings):
        raise AssertionError("nothing may be built")

    monkeypatch.setattr(build, "judge_lm", no_build)
    from judgealign.cli import build_parser

    args = build_parser().parse_args(["cv", "--rubric", str(rubric_path), "--labels",
                                      str(labels_path), "--out", str(tmp_path / "taken")])
    with pytest.raises(CVOptionsError, match="existing file"):
        run_cv_command(args, Settings())
    args = build_parser().parse_args(["cv", "--rubric", str(rubric_path), "--labels",
                                      str(labels_path), "--folds", "9",
                                      "--out", str(tmp_path / "r")])
    with pytest.raises(CVOptionsError, match="9 folds need at least 9 distinct items, got 8"):
        run_cv_command(args, Settings())
    assert not (tmp_path / "r").exists()


def test_demo_defaults_to_the_documented_subset():
    from judgealign.cli import build_parser
    from judgealign.evaluation.runner import options_for, plan_for

    parser = build_parser()
    args = parser.parse_args(["demo"])
    plan = plan_for(args)
    assert plan.dimensions == ["model_training", "data_imputation"] and plan.limit == 16
    assert plan.variants == ["baseline", "memalign"]  # both memories
    options = options_for(args, plan)
    assert options.references == ("constant", "neighbours") and options.limit == 16
    full = plan_for(parser.parse_args(["demo", "--full"]))
    assert full.dimensions is None and full.limit is None
    assert full.variants == ["baseline", "memalign"]  # the issue's --full; ablations by flag
    custom = plan_for(parser.parse_args(["demo", "--full", "--variants", "baseline,knn-fewshot"]))
    assert custom.variants == ["baseline", "knn-fewshot"]
    cv = plan_for(parser.parse_args(["cv", "--rubric", "r", "--labels", "l"]))
    assert cv.dimensions is None and cv.limit is None


def test_the_demo_subset_defaults_only_what_the_configuration_leaves_unset():
    from judgealign.config import load_config
    from judgealign.evaluation.runner import demo_settings

    plain = demo_settings(load_config(environ={}))
    assert plain["scoring"] == {"mode": "joint"}
    assert plain["memory"]["reflection"] == "extractive"
    assert plain["memory"]["validate_guidelines"] is False and plain["memory"]["k"] == 2
    chosen = demo_settings(load_config(overrides={"scoring": {"mode": "per-dimension"},
                                                  "memory": {"reflection": "auto"}},
                                       environ={}))
    assert chosen["scoring"] == {} and "reflection" not in chosen["memory"]
    assert chosen["memory"]["validate_guidelines"] is False
    strong = demo_settings(load_config(overrides={"reflection_lm": {"model": "openai/gpt-4.1"}},
                                       environ={}))
    assert "reflection" not in strong["memory"] and "validate_guidelines" not in strong["memory"]
    # --full: the same choices, the configured memory budget (no prompt cuts), and with the
    # embedded judge two guidelines and two demos per dimension and calibrations on 24
    # training items, each unless the configuration says otherwise.
    full = demo_settings(load_config(environ={}), subset=False)
    assert full["scoring"] == {"mode": "joint"} and full["memory"] == {
        "reflection": "extractive", "validate_guidelines": False, "max_guidelines": 2,
        "k": 2, "calibration_items": 24}
    mine = demo_settings(load_config(overrides={"memory": {"max_guidelines": 5, "k": 4}},
                                     environ={}), subset=False)
    assert "max_guidelines" not in mine["memory"] and "k" not in mine["memory"]
    assert mine["memory"]["calibration_items"] == 24
    hosted = demo_settings(load_config(overrides={"lm": {"model": "openai/gpt-4.1"}},
                                       environ={}), subset=False)
    assert "max_guidelines" not in hosted["memory"]
    assert "calibration_items" not in hosted["memory"]
