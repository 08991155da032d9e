"""Tests of the reference predictors (constant, neighbours) and the human-vs-human ceiling:
fitted on training items only, in every table, results.json, the figure and the paired
bootstrap, and the warning when the judge does not beat them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from cv_cases import banana_labels, run

from judgealign.evaluation.analysis import human_records
from judgealign.evaluation.leakage import LeakageError
from judgealign.evaluation.report import format_table, reference_warnings, write_report
from judgealign.evaluation.variants import (
    ConstantPredictor,
    NeighboursPredictor,
    embed_items,
    run_reference,
)
from judgealign.labels import LabelSet
from judgealign.memory.embedders import HashingEmbedder
from judgealign.testing import dimension_of, scripted_lm


def _labels(tiny_rubric, scores, dimension="clarity", texts=None):
    rows = [{"item_id": f"t{n:02d}", "inputs": {"answer": texts[n] if texts else f"text {n}"},
             "dimension": dimension, "score": s} for n, s in enumerate(scores)]
    return LabelSet.from_records(rows, rubric=tiny_rubric)


def test_constant_predicts_the_lower_median_and_na_by_majority(tiny_rubric):
    train = _labels(tiny_rubric, [1, 3, 2, 3])
    assert ConstantPredictor(train, ["clarity"]).predict("x", "clarity")[0] == 2  # lower median
    assert ConstantPredictor(_labels(tiny_rubric, [None, None, 3]), ["clarity"]).predict(
        "x", "clarity")[0] is None  # most training labels are N/A
    assert ConstantPredictor(_labels(tiny_rubric, [None, 1, 3]), ["clarity"]).predict(
        "x", "clarity")[0] == 1
    assert ConstantPredictor(train, ["correctness"]).predict("x", "correctness") is None


def test_neighbours_uses_the_k_nearest_training_items(tiny_rubric):
    texts = ["apples and pears", "apples and pears too", "apples, pears!", "rocket fuel",
             "rocket fuel mix", "held-out apples and pears"]
    labels = _labels(tiny_rubric, [1, 1, 3, 3, 3, 2], texts=texts)
    vectors = embed_items(labels, HashingEmbedder(256))
    assert all(abs(np.linalg.norm(v) - 1) < 1e-9 for v in vectors.values())
    train = labels.subset([f"t{n:02d}" for n in range(5)])
    value, _, used = NeighboursPredictor(train, ["clarity"], vectors, k=2).predict("t05",
                                                                                 "clarity")
    assert value == 1 and set(used) <= {"t00", "t01", "t02"} and len(used) == 2
    _, _, used3 = NeighboursPredictor(train, ["clarity"], vectors, k=3).predict("t05", "clarity")
    assert set(used3) == {"t00", "t01", "t02"}
    # k = 0 in the settings still means one neighbour.
    assert len(NeighboursPredictor(train, ["clarity"], vectors, k=0).predict("t05",
                                                                             "clarity")[2]) == 1


def test_a_reference_fitted_on_a_held_out_item_is_stopped(tiny_rubric):
    labels = _labels(tiny_rubric, [1, 2, 3, 2])
    refs = {"clarity": labels.reference("clarity")}
    with pytest.raises(LeakageError, match="training items: t03"):
        run_reference("constant", labels, fold=0, train_ids=["t00", "t01", "t03"],
                      test_ids=["t02", "t03"], references=refs, dims=["clarity"], vectors=None,
                      k=1)
    ok = run_reference("constant", labels, fold=0, train_ids=["t00", "t01"],
                       test_ids=["t02", "t03"], references=refs, dims=["clarity"],
                       vectors=None, k=1)
    assert [(r.item_id, r.judge, r.human) for r in ok] == [("t02", 1, 3), ("t03", 1, 2)]


def test_references_are_rows_everywhere_and_compared_with_every_variant(tiny_rubric, tmp_path):
    labels = banana_labels(tiny_rubric)
    result = run(tiny_rubric, labels, variants=("baseline", "memalign"))
    assert result.references == ["constant", "neighbours"]
    assert result.rows == ["baseline", "memalign", "constant", "neighbours"]
    for ref in result.references:  # fitted per fold on the training items only
        recs = [r for r in result.records if r.variant == ref]
        assert len(recs) == 12 * 2
        assert all(result.folds[i] != r.fold for r in recs for i in r.retrieved_ids)
    # On the banana task the nearest training answers carry the right label.
    assert result.agreement[("neighbours", "correctness")].mae == 0.0
    assert result.best_reference == {"correctness": "neighbours", "clarity": "constant"}
    for v in ("baseline", "memalign"):
        for dim in result.dimensions:
            comp = result.comparison(v, dim, "reference")
            assert comp["reference"] == result.best_reference[dim] and comp["n_items_paired"] \
                == 12
    # The baseline (always 3 on correctness) loses to the neighbours reference.
    loses = result.comparison("baseline", "correctness", "reference")
    assert loses["diff"] == pytest.approx(1.0) and loses["significant"]

    data = json.loads(write_report(result, tmp_path)["results"].read_text())
    assert {m["variant"] for m in data["mae"]} == {"baseline", "memalign", "constant",
                                                  "neighbours"}
    assert {(c["variant"], c["reference"]) for c in data["comparisons"]} == {
        ("memalign", "baseline"), ("baseline", "neighbours"), ("memalign", "neighbours"),
        ("baseline", "constant"), ("memalign", "constant")}
    table = format_table(result)
    assert re.search(r"^correctness\s+neighbours\s+12\s+0\.00", table, re.M)
    report = (tmp_path / "report.md").read_text()
    assert "| Correctness | neighbours (reference) | 12 | 0.00 |" in report
    assert "## Against the better reference predictor" in report


def test_the_figure_has_a_bar_per_row(tiny_rubric, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    labels = banana_labels(tiny_rubric, 6)
    result = run(tiny_rubric, labels, variants=("baseline",), folds=2)
    drawn = []
    real = Axes.bar

    def bar(self, *args, **kwargs):
        drawn.append(kwargs.get("label"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", bar)
    write_report(result, tmp_path)
    assert drawn == ["baseline", "constant (reference)", "neighbours (reference)"]


def test_the_report_warns_when_the_judge_does_not_beat_the_median(tiny_rubric, tmp_path):
    labels = banana_labels(tiny_rubric)
    result = run(tiny_rubric, labels, variants=("baseline",), references=("constant",))
    warnings = reference_warnings(result)
    assert any(w.startswith("warning: the judge does not beat predicting the training median "
                            "on Correctness") for w in warnings)
    report = write_report(result, tmp_path)["report"].read_text()
    assert "does not beat predicting the training median on Correctness" in report


def test_no_warning_when_the_judge_clearly_beats_both_references(tiny_rubric):
    # The score is the parity of a number the embedder cannot see; the judge reads it.
    numbers = [17, 40, 23, 8, 91, 66, 35, 12, 59, 74, 3, 28, 85, 50, 47, 96]
    rows = [{"item_id": f"p{n:02d}", "inputs": {"answer": f"value {v}"},
             "dimension": "correctness", "score": 3 if v % 2 == 0 else 1}
            for n, v in enumerate(numbers)]
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)

    def parity(prompt):
        if dimension_of(prompt) != "Correctness":
            return {"score": "2", "rationale": "-"}
        value = int(re.findall(r"value (\d+)", prompt)[-1])
        return {"score": "3" if value % 2 == 0 else "1", "rationale": "parity"}

    result = run(tiny_rubric, labels, variants=("baseline",), folds=4, n_bootstrap=1000,
                 lms=(scripted_lm(parity), scripted_lm(parity)))
    comp = result.comparison("baseline", "correctness", "reference")
    assert comp["mae_b"] == 0.0 and comp["significant"] and comp["diff"] < 0
    assert reference_warnings(result) == []


def test_references_can_be_switched_off(tiny_rubric):
    result = run(tiny_rubric, banana_labels(tiny_rubric, 6), variants=("baseline",), folds=2,
                 references=())
    assert result.references == [] and result.rows == ["baseline"]
    assert not [c for c in result.comparisons if c["against"] == "reference"]


# --- human vs human -------------------------------------------------------------------------


def _rated(tiny_rubric):
    rows = []
    for item, scores in {"a": [1, 1, 3], "b": [2, 2, 2], "c": [3, None], "d": [2]}.items():
        for n, score in enumerate(scores):
            rows.append({"item_id": item, "inputs": {"answer": f"answer {item}"},
                         "dimension": "clarity", "score": score, "rater": f"r{n}"})
    for n in range(6):  # more single-rater items so that there is something to fold
        rows.append({"item_id": f"s{n}", "inputs": {"answer": f"single {n}"},
                     "dimension": "clarity", "score": 2, "rater": "r0"})
    return LabelSet.from_records(rows, rubric=tiny_rubric)


def test_each_rater_is_scored_against_the_others_aggregate(tiny_rubric):
    labels = _rated(tiny_rubric)
    recs = human_records(labels, ["clarity"], {})
    got = {(r.item_id, r.rater): (r.judge, r.human) for r in recs}
    assert got == {("a", "r0"): (1, 1), ("a", "r1"): (1, 1), ("a", "r2"): (3, 1),
                   ("b", "r0"): (2, 2), ("b", "r1"): (2, 2), ("b", "r2"): (2, 2),
                   ("c", "r0"): (3, None), ("c", "r1"): (None, 3)}  # d: one rater, left out


def test_the_human_ceiling_is_a_row_with_its_ci_and_n(tiny_rubric, tmp_path):
    labels = _rated(tiny_rubric)
    result = run(tiny_rubric, labels, variants=("baseline",), folds=2)
    m = result.mae_of("human", "clarity")
    # a: (0 + 0 + 2) / 3; b: 0; c: rater 3 vs N/A costs 2, N/A vs 3 costs max(2, 0) = 2.
    assert m["n"] == 3 and m["n_pairs"] == 8 and m["kind"] == "human"
    assert m["mae"] == pytest.approx((2 / 3 + 0 + 2) / 3)
    assert m["ci_low"] <= m["mae"] <= m["ci_high"]
    assert result.rows[-1] == "human" and result.data["multi_rater_items"] == {"clarity": 3}
    assert not [c for c in result.comparisons if c["variant"] == "human"]
    report = write_report(result, tmp_path)["report"].read_text()
    assert "| Clarity | human vs human (ceiling) | 3 |" in report
    assert "Human vs human on Clarity: MAE 0.89" in report
    assert "human" in format_table(result)
    single = run(tiny_rubric, banana_labels(tiny_rubric, 6), variants=("baseline",), folds=2)
    assert not single.has_human and "human" not in single.rows


def test_references_alone_need_no_lm(tiny_rubric):
    from judgealign.config import Settings
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions

    # An [lm] that cannot be built: nothing may try to.
    settings = Settings.model_validate({"lm": {"model": "openai/x", "api_key_env": "NOPE_X"}})
    result = cross_validate(tiny_rubric, banana_labels(tiny_rubric, 8), settings,
                            CVOptions(variants=(), folds=2, n_bootstrap=100, progress=False))
    assert result.variants == [] and result.rows == ["constant", "neighbours"]
    assert result.costs == [] and result.comparisons == []
    assert result.mae_of("neighbours", "correctness")["n"] == 8
