"""Tests of judgealign.evaluation.report: results.json, report.md, mae.png and the table."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from judgealign.adapter import judged_text
from judgealign.config import Settings
from judgealign.evaluation.crossval import cross_validate
from judgealign.evaluation.metrics import agreement, charged_errors
from judgealign.evaluation.options import CVOptions
from judgealign.evaluation.report import PNG_SIGNATURE, format_table, write_report
from judgealign.labels import LabelSet
from judgealign.testing import dimension_of, scripted_lm

RULE = "Answers that mention banana are wrong."
PLAIN = "Plain, readable sentences are what the experts call readable."


def judge_responder(prompt: str) -> dict[str, str]:
    """Answers 3 (clarity: N/A for "(empty)" answers, else 2) unless the learned rule applies."""
    item = judged_text(prompt, "answer").lower()
    if dimension_of(prompt) == "Clarity":
        return {"score": "N/A" if item.strip() == "(empty)" else "2", "rationale": "r"}
    if "banana" in item and RULE in prompt:
        return {"score": "1", "rationale": "mentions banana"}
    return {"score": "3", "rationale": "looks right"}


def reflection_responder(prompt: str) -> dict[str, list]:
    """A capable reflection LM: cites the banana examples (the only ones scored 1) for the
    rule, and on a dimension without them (clarity) a harmless rule citing what it saw, so
    MemAlign's ``auto`` mode never takes it for an LM that cannot cite."""
    ones = re.findall(r"\[(E\d+)\] expert score: 1\n", prompt)
    if ones:
        return {"guidelines": [{"text": RULE, "sources": ones}]}
    seen = re.findall(r"\[(E\d+)\] expert score", prompt)
    return {"guidelines": [{"text": PLAIN, "sources": seen}] if seen else []}


@pytest.fixture(scope="module")
def result():
    """One cross-validation shared by the tests below (they only read it)."""
    from judgealign.signatures.rubric import rubric_from_dict
    from judgealign.testing import TINY_RUBRIC

    tiny_rubric = rubric_from_dict(TINY_RUBRIC)
    rows = []
    for i in range(12):
        banana = i % 2 == 0
        answer = f"a banana answer number {i}" if banana else f"the sky is blue, reason {i}"
        rows.append({"item_id": f"i{i:02d}", "inputs": {"answer": answer},
                     "dimension": "correctness", "score": 1 if banana else 3,
                     "rationale": "Mentions banana, which is wrong." if banana
                     else "Correct explanation."})
        rows.append({"item_id": f"i{i:02d}", "inputs": {"answer": answer},
                     "dimension": "clarity", "score": 2 if i % 3 else 3, "rationale": "ok"})
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cross_validate(tiny_rubric, labels, Settings(),
                              CVOptions(folds=3, n_bootstrap=2000, progress=False),
                              lm=scripted_lm(judge_responder),
                              reflection_lm=scripted_lm(reflection_responder))


def test_memalign_beats_baseline_and_the_report_says_so(result, tmp_path):
    base = result.agreement[("baseline", "correctness")]
    aligned = result.agreement[("memalign", "correctness")]
    assert base.mae == 1.0 and aligned.mae == 0.0
    comp = result.comparison("memalign", "correctness")
    assert comp["significant"] and comp["ci_high"] < 0 and comp["relative_reduction"] == 1.0

    paths = write_report(result, tmp_path / "rep", dataset_card="Twelve tiny answers.")
    report = paths["report"].read_text(encoding="utf-8")
    assert ("memalign lowers the MAE on correctness from 1.00 to 0.00 (-1.00, 100% error "
            "reduction, n=12): significant") in report
    assert "| Correctness | memalign | 12 | 1.00 → 0.00 | -1.00 |" in report
    assert "not significant" in report  # clarity: no change
    for heading in ("## Settings", "## Agreement with the experts", "## Cost per variant",
                    "## Data", "Twelve tiny answers.", "![MAE"):
        assert heading in report


def test_the_figure_is_a_png_that_opens(result, tmp_path):
    import matplotlib.image
    from PIL import Image

    path = write_report(result, tmp_path)["figure"]
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"


def test_results_json_holds_enough_to_recompute_every_number(result, tmp_path):
    data = json.loads(write_report(result, tmp_path)["results"].read_text(encoding="utf-8"))
    assert data["settings"]["lm"]["model"] == "scripted/test"
    # 2 variants + 2 reference predictors, x 12 items x 2 dimensions
    assert len(data["records"]) == 4 * 12 * 2
    mae = {(m["variant"], m["dimension"]): m for m in data["mae"]}
    for entry in data["agreement"]:
        rows = sorted((r for r in data["records"] if r["variant"] == entry["variant"]
                       and r["dimension"] == entry["dimension"]), key=lambda r: r["item_id"])
        args = ([r["human"] for r in rows], [r["judge"] for r in rows],
                [r["failed"] for r in rows])
        again = agreement(*args[:2], levels=data["settings"]["scale"], failed=args[2]).to_dict()
        assert again == {k: entry[k] for k in again}
        charged = charged_errors(*args, levels=data["settings"]["scale"])
        assert mae[(entry["variant"], entry["dimension"])]["mae"] == pytest.approx(
            float(charged.mean()))
    # Undefined metrics (a constant judge has no Spearman) are null, never NaN.
    assert any(entry["spearman"] is None for entry in data["agreement"])
    assert "NaN" not in json.dumps(data)


def test_terminal_table_has_aligned_columns(result):
    table = format_table(result)
    lines = table.splitlines()
    # header, rule, one line per dimension x row, and the footnote on the charged MAE
    assert len(lines) == 2 + len(result.dimensions) * len(result.rows) + 1
    assert lines[-1].startswith("* MAE: failures charged")
    header, rule = lines[0], lines[1]
    starts = [m.start() for m in re.finditer(r"-+", rule)]
    assert [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)][:2] == starts[:2]
    row = next(line for line in lines if line.startswith("correctness  memalign"))
    assert "-1.00" in row and "yes" in row
    widths = {len(line) for line in lines[2:] if "memalign" in line}
    assert len(widths) == 1


def test_na_and_failures_are_counted(tiny_rubric, tmp_path):
    rows = [{"item_id": f"n{i}", "inputs": {"answer": "(empty)" if i < 2 else f"x{i}",
                                            "question": "q"},
             "dimension": "clarity", "score": None if i < 2 else 2} for i in range(6)]
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)

    def sometimes_broken(prompt):
        if "x5" in judged_text(prompt, "answer"):
            return "not JSON at all"
        return judge_responder(prompt)

    res = cross_validate(tiny_rubric, labels, Settings(),
                         CVOptions(variants=("baseline",), folds=2, n_bootstrap=100,
                                   progress=False), lm=scripted_lm(sometimes_broken))
    a = res.agreement[("baseline", "clarity")]
    assert (a.n_both_na, a.n_failed, a.n_scored) == (2, 1, 3)
    # The failure (human 2 on 1..3) is charged max(1, 1) = 1 over all 6 items.
    assert a.mae == pytest.approx(1 / 6) and a.mae_scored == 0.0
    assert np.isnan(a.qwk)
    text = write_report(res, tmp_path)["report"].read_text(encoding="utf-8")
    assert "Only the baseline ran" in text and "| Clarity | baseline | 6 | 3 |" in text
    assert json.loads((tmp_path / "results.json").read_text())["agreement"][0]["qwk"] is None
