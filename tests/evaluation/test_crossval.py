"""Tests of judgealign.evaluation.crossval (folds, leakage, resume, DSPy baselines) and of the
``cv``/``demo`` runner, with scripted LMs on the tiny rubric."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from judgealign.evaluation.crossval import (
    CVResult,
    LeakageError,
    assign_folds,
    check_no_leakage,
    cross_validate,
)
from judgealign.labels import LabelSet
from judgealign.memory.semantic import Guideline
from judgealign.optimizers.memalign import MemAlign
from judgealign.program import RubricJudge
from judgealign.testing import TINY_RUBRIC, dimension_of, scripted_lm

RULE = "Answers that mention banana are wrong."
FIELD = "[[ ## answer ## ]]"


# --- a case where expert feedback must help ----------------------------------------------------
# The experts score every answer mentioning "banana" 1 on correctness, every other answer 3.
# The scripted judge answers 3 unless its prompt tells it otherwise: the learned guideline, or
# a demo that shows a banana answer scored 1. Clarity is 2 everywhere, and so is the judge.


def judge_responder(prompt: str) -> dict[str, str]:
    if dimension_of(prompt) == "Clarity":
        return {"score": "2", "rationale": "readable"}
    parts = prompt.split(FIELD)
    item = parts[-1].split("[[ ##")[0].lower()
    # parts[1] is the adapter's field template; demos are the parts between it and the item.
    demo_says = any("banana" in p and '"score": "1"' in p for p in parts[2:-1])
    if "banana" in item and (RULE in prompt or demo_says):
        return {"score": "1", "rationale": "mentions banana"}
    return {"score": "3", "rationale": "looks right"}


def reflection_responder(prompt: str) -> dict[str, list]:
    cites = re.findall(r"\[(E\d+)\] expert score: 1\nexpert rationale: [^\n]*\n"
                       r"item excerpt:\nanswer: [^\n]*banana", prompt)
    return {"guidelines": [{"text": RULE, "sources": cites}] if cites else []}


def banana_labels(rubric, n: int = 12) -> LabelSet:
    rows = []
    for i in range(n):
        banana = i % 2 == 0
        answer = f"a banana answer number {i}" if banana else f"the sky is blue, reason {i}"
        rows.append({"item_id": f"i{i:02d}", "inputs": {"answer": answer},
                     "dimension": "correctness", "score": 1 if banana else 3,
                     "rationale": "Mentions banana, which is wrong." if banana
                     else "Correct explanation."})
        rows.append({"item_id": f"i{i:02d}", "inputs": {"answer": answer},
                     "dimension": "clarity", "score": 2, "rationale": "readable"})
    return LabelSet.from_records(rows, rubric=rubric)


def lms() -> tuple:
    return (scripted_lm(judge_responder, name="scripted/judge"),
            scripted_lm(reflection_responder, name="scripted/reflect"))


def run(rubric, labels, **kwargs) -> CVResult:
    judge_lm, reflect_lm = kwargs.pop("lms", None) or lms()
    kwargs.setdefault("folds", 3)
    kwargs.setdefault("n_bootstrap", 300)
    kwargs.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no usable guideline" for clarity, by design
        return cross_validate(rubric, labels, lm=judge_lm, reflection_lm=reflect_lm, **kwargs)


# --- folds ------------------------------------------------------------------------------------


def test_folds_are_reproducible_balanced_and_seeded(tiny_rubric):
    labels = banana_labels(tiny_rubric, 13)
    ids = labels.item_ids
    a = assign_folds(ids, 4, seed=0, labels=labels)
    assert a == assign_folds(list(reversed(ids)), 4, seed=0, labels=labels)  # order-free
    assert assign_folds(ids, 4, seed=1, labels=labels) != a
    assert set(a) == set(ids) and set(a.values()) == {0, 1, 2, 3}
    sizes = sorted(list(a.values()).count(f) for f in range(4))
    assert sizes[-1] - sizes[0] <= 1
    assert assign_folds(ids, 4, seed=0) == assign_folds(ids, 4, seed=0)


def test_folds_are_stratified_by_reference_score(tiny_rubric):
    rows = [{"item_id": f"x{i:02d}", "inputs": {"answer": f"a{i}"}, "dimension": "correctness",
             "score": 1 + i % 3} for i in range(12)]
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    ref = labels.reference("correctness")
    for seed in range(5):
        folds = assign_folds(labels.item_ids, 4, seed, labels=labels)
        for f in range(4):
            # 4 items of each score, 4 folds: every fold gets exactly one of each.
            assert sorted(ref[i] for i in folds if folds[i] == f) == [1, 2, 3]


def test_bad_fold_counts_are_rejected():
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        assign_folds(["a", "b"], 1)
    with pytest.raises(ValueError, match="at least 3 distinct items"):
        assign_folds(["a", "b"], 3)


def test_every_item_is_judged_once_per_variant_and_stays_whole(tiny_rubric):
    labels = banana_labels(tiny_rubric)
    result = run(tiny_rubric, labels)
    for variant in result.variants:
        seen = [(r.item_id, r.dimension) for r in result.records if r.variant == variant]
        assert sorted(seen) == sorted((e.item_id, e.dimension) for e in labels.episodes())
    for r in result.records:  # all dimensions of an item in its one fold
        assert r.fold == result.folds[r.item_id]
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["folds"] == result.folds


# --- leakage ----------------------------------------------------------------------------------


class Recording:
    """An optimizer that records the item ids of the training set it is given."""

    def __init__(self, calls: list, inner=None) -> None:
        self.calls, self.inner = calls, inner

    def compile(self, student, *, trainset):
        self.calls.append(set(trainset.item_ids))
        return self.inner.compile(student, trainset=trainset) if self.inner else student


def test_each_fold_aligns_on_its_training_items_only(tiny_rubric):
    labels = banana_labels(tiny_rubric)
    calls: list[set[str]] = []
    _, reflect_lm = lms()

    def factory(variant):
        return None if variant == "baseline" else Recording(calls, MemAlign(
            reflection_lm=reflect_lm))

    result = run(tiny_rubric, labels, folds=4, optimizer_factory=factory)
    assert len(calls) == 4
    everything = set(labels.item_ids)
    for fold, trained_on in enumerate(calls):  # folds run in order
        held_out = {i for i, f in result.folds.items() if f == fold}
        assert held_out and trained_on == everything - held_out


def test_an_optimizer_that_peeks_at_held_out_items_is_stopped(tiny_rubric):
    labels = banana_labels(tiny_rubric)
    _, reflect_lm = lms()

    class Peeking:
        def compile(self, student, *, trainset):
            return MemAlign(reflection_lm=reflect_lm).compile(student, trainset=labels)

    with pytest.raises(LeakageError, match="held-out items reached the aligned judge"):
        run(tiny_rubric, labels, optimizer_factory=lambda v: None if v == "baseline"
            else Peeking())


def test_leakage_guard_looks_at_guidelines_and_seen_episodes(tiny_rubric):
    judge = RubricJudge(tiny_rubric)
    check_no_leakage(judge, ["i01"])
    judge.judges["correctness"].set_guidelines([Guideline("x", "correctness", ("i01",))])
    with pytest.raises(LeakageError, match="guideline sources: i01"):
        check_no_leakage(judge, ["i01", "i02"])
    judge = RubricJudge(tiny_rubric)
    judge.seen["i02::clarity"] = "abc"
    with pytest.raises(LeakageError, match="seen episodes: i02"):
        check_no_leakage(judge, ["i02"])


# --- resume -----------------------------------------------------------------------------------


def test_resume_reuses_finished_folds(tiny_rubric, tmp_path):
    labels = banana_labels(tiny_rubric)
    first_lms = lms()
    first = run(tiny_rubric, labels, lms=first_lms, checkpoint_dir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "folds").iterdir())
    assert files == [f"fold{f}-{v}.json" for f in range(3) for v in ("baseline", "memalign")]
    assert first_lms[0].engine.calls > 0

    again = lms()  # new LM objects with the same identity
    second = run(tiny_rubric, labels, lms=again, checkpoint_dir=tmp_path, resume=True)
    assert again[0].engine.calls == 0 and again[1].engine.calls == 0
    assert [r.to_dict() for r in second.records] == [r.to_dict() for r in first.records]
    assert all(c.reused for c in second.costs)

    (tmp_path / "folds" / "fold1-memalign.json").unlink()
    third_lms = lms()
    run(tiny_rubric, labels, lms=third_lms, checkpoint_dir=tmp_path, resume=True)
    assert third_lms[0].engine.calls == 4 * 2  # fold 1's items x 2 dimensions, memalign only

    other_seed = lms()  # other folds: nothing may be reused
    run(tiny_rubric, labels, lms=other_seed, checkpoint_dir=tmp_path, resume=True, seed=1)
    assert other_seed[0].engine.calls == 2 * 12 * 2


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
        # demos come from the training folds only
        assert all(result.folds[i] != r.fold for i in r.retrieved_ids)
    knn = [r for r in result.records if r.variant == "knn-fewshot"
           and r.dimension == "correctness" and "banana" in labels.items()[r.item_id]["answer"]]
    assert all("banana" in labels.items()[r.retrieved_ids[0]]["answer"] for r in knn)
    assert result.agreement[("knn-fewshot", "correctness")].mae == 0.0
    boot = [c for c in result.costs if c.variant == "bootstrap-fewshot"]
    assert all(c.align_calls > 0 for c in boot)  # it runs the judge to bootstrap demos
    assert any('"score": "1"' in p.split(FIELD)[2] for p in prompts if FIELD in p
               and len(p.split(FIELD)) > 3)


def test_demo_texts_are_cut_to_the_same_budget_for_every_variant(tiny_rubric):
    labels = banana_labels(tiny_rubric, 8)
    long_row = {"item_id": "long", "inputs": {"answer": "banana " + "word " * 3000},
                "dimension": "correctness", "score": 1, "rationale": "banana again"}
    labels = LabelSet([*labels, *LabelSet.from_records([long_row], rubric=tiny_rubric)])
    prompts: list[str] = []

    def recording_judge(prompt):
        prompts.append(prompt)
        return judge_responder(prompt)

    run(tiny_rubric, labels, variants=("labeled-fewshot", "knn-fewshot", "episodic-only"),
        demo_input_tokens=64, k=8,
        lms=(scripted_lm(recording_judge), scripted_lm(reflection_responder)))
    demo_parts = [part for p in prompts for part in p.split(FIELD)[2:-1] if "word word" in part]
    assert demo_parts, "the long item was never shown as a demo"
    assert all("characters cut to fit" in part and len(part) < 1200 for part in demo_parts)


def test_a_knn_baseline_judge_can_forget_items(tiny_rubric):
    from judgealign.optimizers.baselines import FewShotBaseline

    labels = banana_labels(tiny_rubric, 8)
    judge = FewShotBaseline("knn-fewshot", k=2).compile(RubricJudge(tiny_rubric, lm=lms()[0]),
                                                        trainset=labels)
    assert judge.memory.item_ids() == set(labels.item_ids)
    forgotten = judge.unalign(["i00", "i02"])
    assert forgotten.memory.item_ids() == set(labels.item_ids) - {"i00", "i02"}
    found = forgotten.memory.retrieve({"answer": "a banana answer number 0"},
                                      dimension="correctness", k=2)
    assert [e.item_id for e in found] and not {"i00", "i02"} & {e.item_id for e in found}
    assert judge.memory.item_ids() == set(labels.item_ids)  # the original is untouched


def test_unsupported_and_unknown_variants(tiny_rubric):
    labels = banana_labels(tiny_rubric, 6)
    result = run(tiny_rubric, labels, variants=("baseline", "mipro", "gepa"))
    assert result.variants == ["baseline"]
    assert set(result.skipped) == {"mipro", "gepa"}
    assert "not a cv variant yet" in result.skipped["gepa"]
    assert result.to_dict()["skipped"]["mipro"].startswith("dspy.MIPROv2")
    with pytest.raises(ValueError, match="unknown variant"):
        run(tiny_rubric, labels, variants=("baseline", "magic"))


def test_an_aligned_judge_is_refused(tiny_rubric):
    labels = banana_labels(tiny_rubric, 6)
    judge = RubricJudge(tiny_rubric, lm=lms()[0])
    judge.seen["i00::clarity"] = "x"
    with pytest.raises(ValueError, match="unaligned judge"):
        cross_validate(judge, labels, progress=False)


# --- the cv / demo commands -------------------------------------------------------------------


def test_cv_command_writes_the_report(tiny_rubric, tmp_path, monkeypatch, capsys):
    from judgealign import cli
    from judgealign.evaluation import runner

    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text("\n".join(
        json.dumps({"item_id": e.item_id, "inputs": e.inputs, "dimension": e.dimension,
                    "score": e.score, "rationale": e.rationale})
        for e in banana_labels(tiny_rubric, 8).episodes()), encoding="utf-8")
    rubric_path = tmp_path / "tiny.yaml"
    rubric_path.write_text(json.dumps(TINY_RUBRIC), encoding="utf-8")  # JSON is YAML
    judge_lm, reflect_lm = lms()
    monkeypatch.setattr(runner, "build_lm", lambda settings: judge_lm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = cli.main(["cv", "--rubric", str(rubric_path), "--labels", str(labels_path),
                         "--folds", "2", "--bootstrap", "200", "--out", str(tmp_path / "rep")])
    assert code == 0
    out = capsys.readouterr().out
    assert "memalign" in out and "95% CI" in out and "report.md" in out
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"report.md", "results.json",
                                                              "mae.png", "folds"}


def test_demo_defaults_to_the_documented_subset():
    from judgealign.cli import build_parser
    from judgealign.evaluation.runner import FULL_VARIANTS, plan_for

    parser = build_parser()
    plan = plan_for(parser.parse_args(["demo"]))
    assert plan.dimensions == ["model_training", "data_imputation"] and plan.limit == 16
    assert plan.variants == ["baseline", "episodic-only"]
    full = plan_for(parser.parse_args(["demo", "--full"]))
    assert full.dimensions is None and full.limit is None
    assert full.variants == list(FULL_VARIANTS)
    custom = plan_for(parser.parse_args(["demo", "--full", "--variants", "baseline,knn-fewshot"]))
    assert custom.variants == ["baseline", "knn-fewshot"]
    cv = plan_for(parser.parse_args(["cv", "--rubric", "r", "--labels", "l"]))
    assert cv.dimensions is None and cv.limit is None


def test_checkpoint_files_are_json(tiny_rubric, tmp_path):
    labels = banana_labels(tiny_rubric, 6)
    run(tiny_rubric, labels, variants=("baseline",), folds=2, checkpoint_dir=tmp_path)
    data = json.loads(Path(tmp_path / "folds" / "fold0-baseline.json").read_text())
    assert data["variant"] == "baseline" and len(data["fingerprint"]) == 64
    assert not list((tmp_path / "folds").glob("*.tmp"))


def test_items_with_identical_inputs_share_a_fold(tiny_rubric):
    from judgealign.evaluation.crossval import assign_folds
    from judgealign.labels import LabelSet

    rows = [{"item_id": f"i{n}", "inputs": {"answer": f"text {n % 5}"},
             "dimension": "correctness", "score": 1 + n % 3, "rationale": ""} for n in range(20)]
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    for seed in range(5):
        folds = assign_folds(labels.item_ids, 4, seed=seed, labels=labels)
        for n in range(20):
            assert folds[f"i{n}"] == folds[f"i{n % 5}"]
