"""Tests of ``group_by`` (issue 14): items sharing an input field (several answers to one
question, as in SQuALITY) stay in one fold, through the fold builder, ``CVOptions``,
``cross_validate`` and the ``cv``/``demo`` flag ``--group-by``."""

from __future__ import annotations

import json
import warnings

import pytest

from judgealign.config import Settings
from judgealign.errors import JudgeAlignError
from judgealign.evaluation.crossval import cross_validate
from judgealign.evaluation.folds import assign_folds, content_groups
from judgealign.evaluation.options import CVOptions, CVOptionsError
from judgealign.labels import LabelSet
from judgealign.testing import TINY_RUBRIC, scripted_lm

QUESTIONS = 12
SEEDS = range(6)


def question_rows(n_questions: int = QUESTIONS) -> list[dict]:
    """Three answers per question; the siblings get scores 1, 2, 3, so stratification alone
    would deal them into different folds."""
    rows = []
    for q in range(n_questions):
        for a in range(3):
            # Whitespace around the question must not matter.
            question = f"What happens in story {q}?"
            question = f"  {question}\n" if a == 1 else question
            rows.append({"item_id": f"q{q:02d}a{a}",
                         "inputs": {"answer": f"answer {a} to question {q}",
                                    "question": question},
                         "dimension": "correctness", "score": 1 + (a + q) % 3,
                         "rationale": "because"})
    return rows


def groups_of(labels: LabelSet) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in labels.item_ids:
        out.setdefault(i[:3], []).append(i)
    return out


@pytest.fixture
def question_labels(tiny_rubric) -> LabelSet:
    return LabelSet.from_records(question_rows(), rubric=tiny_rubric)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_items_sharing_a_question_share_a_fold(question_labels, k):
    groups = groups_of(question_labels)
    assert len(content_groups(question_labels.item_ids, question_labels,
                              group_by="question")) == QUESTIONS
    for seed in SEEDS:
        folds = assign_folds(question_labels.item_ids, k, seed, labels=question_labels,
                             group_by="question")
        assert set(folds) == set(question_labels.item_ids) and set(folds.values()) == set(range(k))
        for members in groups.values():
            assert len({folds[i] for i in members}) == 1, (seed, members)
        # Whole groups are dealt: group counts per fold differ by at most one.
        per_fold = [sum(folds[m[0]] == f for m in groups.values()) for f in range(k)]
        assert max(per_fold) - min(per_fold) <= 1


def test_without_group_by_siblings_are_split(question_labels):
    groups = groups_of(question_labels)
    split = 0
    for k in (2, 3, 4):
        for seed in SEEDS:
            folds = assign_folds(question_labels.item_ids, k, seed, labels=question_labels)
            split += sum(len({folds[i] for i in m}) > 1 for m in groups.values())
    assert split > 0  # so the test above can fail
    # And the default keeps the old folds: group_by=None changes nothing.
    for seed in SEEDS:
        assert assign_folds(question_labels.item_ids, 3, seed, labels=question_labels) == \
            assign_folds(question_labels.item_ids, 3, seed, labels=question_labels,
                         group_by=None)


def test_group_by_merges_with_identical_inputs_and_skips_empty_values(tiny_rubric):
    rows = [
        # x0 and x1 share a question; x1 and x2 are twins (identical inputs).
        {"item_id": "x0", "inputs": {"answer": "a", "question": "Q1"}},
        {"item_id": "x1", "inputs": {"answer": "b", "question": "Q1"}},
        {"item_id": "x2", "inputs": {"answer": "b", "question": "Q1"}},
        # An empty or missing question groups nothing.
        {"item_id": "y0", "inputs": {"answer": "c", "question": " "}},
        {"item_id": "y1", "inputs": {"answer": "d", "question": ""}},
        {"item_id": "y2", "inputs": {"answer": "e"}},
    ]
    labels = LabelSet.from_records([{**r, "dimension": "correctness", "score": 2}
                                    for r in rows], rubric=tiny_rubric)
    units = sorted(content_groups(labels.item_ids, labels, group_by="question").values())
    assert units == [["x0", "x1", "x2"], ["y0"], ["y1"], ["y2"]]
    assert len(content_groups(labels.item_ids, labels)) == 5  # twins only
    with pytest.raises(CVOptionsError, match="5 folds need at least 5 distinct items, got 4 "
                                             r"\(items sharing 'question' count once\)"):
        assign_folds(labels.item_ids, 5, labels=labels, group_by="question")


@pytest.mark.parametrize("bad", ["", "   ", 3, True, ("question",)])
def test_group_by_must_be_a_field_name(bad):
    with pytest.raises(CVOptionsError, match="group_by must be the name of an input field"):
        CVOptions(group_by=bad)
    assert CVOptions(group_by=" question ").group_by == "question"
    assert CVOptions().group_by is None


def test_unknown_field_is_refused_naming_group_by_and_the_inputs(question_labels, tiny_rubric):
    options = CVOptions(group_by="passage", variants=("baseline",), progress=False)
    with pytest.raises(CVOptionsError, match=r"group_by 'passage' is not an input of the "
                                             r"rubric \(--group-by\); inputs: answer, question"):
        options.check_data(QUESTIONS, 3 * QUESTIONS, input_names=tiny_rubric.input_names)

    def never(prompt):
        raise AssertionError("no LM call before the options are checked")

    with pytest.raises(CVOptionsError, match="group_by 'passage'"):
        cross_validate(tiny_rubric, question_labels, Settings(), options, lm=scripted_lm(never))
    # Too few question groups for the folds is refused before any work, too.
    few = LabelSet.from_records(question_rows(3), rubric=tiny_rubric)
    with pytest.raises(CVOptionsError, match="4 folds need at least 4 distinct items, got 3 "
                                             r"\(9 items, but items with identical inputs "
                                             "or the same 'question' count once\\)"):
        cross_validate(tiny_rubric, few, Settings(),
                       CVOptions(group_by="question", variants=("baseline",), progress=False),
                       lm=scripted_lm(never))


def test_cross_validate_records_group_by_in_the_settings(question_labels, tiny_rubric):
    lm = scripted_lm(lambda prompt: {"score": "2", "rationale": "fine"})
    options = CVOptions(folds=3, seed=1, group_by="question", variants=("baseline",),
                        references=("constant",), n_bootstrap=50, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cross_validate(tiny_rubric, question_labels, Settings(), options, lm=lm)
    assert result.settings["group_by"] == "question"
    assert json.loads(json.dumps(result.to_dict()))["settings"]["group_by"] == "question"
    for members in groups_of(question_labels).values():
        assert len({result.folds[i] for i in members}) == 1
    plain = cross_validate(tiny_rubric, question_labels, Settings(),
                           CVOptions(folds=3, variants=(), references=("constant",),
                                     n_bootstrap=50, progress=False))
    assert plain.settings["group_by"] is None


def _cv_files(tmp_path):
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text("\n".join(json.dumps(r) for r in question_rows()), encoding="utf-8")
    rubric_path = tmp_path / "tiny.yaml"
    rubric_path.write_text(json.dumps(TINY_RUBRIC), encoding="utf-8")  # JSON is YAML
    return str(rubric_path), str(labels_path)


def test_cli_group_by_reaches_the_options(tmp_path, monkeypatch, capsys):
    from judgealign import build
    from judgealign.cli import build_parser, main
    from judgealign.evaluation import crossval
    from judgealign.evaluation.runner import options_for, plan_for

    parser = build_parser()
    for argv in (["demo", "--group-by", "question"],
                 ["cv", "--rubric", "r", "--labels", "l", "--group-by", "question"]):
        args = parser.parse_args(argv)
        assert options_for(args, plan_for(args)).group_by == "question"
    args = parser.parse_args(["cv", "--rubric", "r", "--labels", "l"])
    assert options_for(args, plan_for(args)).group_by is None

    rubric, labels = _cv_files(tmp_path)
    seen = {}

    def fake_cross_validate(rubric, labels, settings, options, **kwargs):
        seen["options"] = options
        raise JudgeAlignError("stop after the options")

    monkeypatch.setattr(crossval, "cross_validate", fake_cross_validate)
    code = main(["cv", "--rubric", rubric, "--labels", labels, "--group-by", "question",
                 "--out", str(tmp_path / "rep")])
    assert code == 2 and seen["options"].group_by == "question"
    assert "grouped by question" in capsys.readouterr().out
    monkeypatch.undo()

    def no_build(*args, **kwargs):
        raise AssertionError("nothing may be built")

    monkeypatch.setattr(build, "judge_lm", no_build)
    for value, message in (("passage", "group_by 'passage' is not an input of the rubric "
                                       "(--group-by); inputs: answer, question"),
                           (" ", "group_by must be the name of an input field")):
        code = main(["cv", "--rubric", rubric, "--labels", labels, "--group-by", value,
                     "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_id_regex_groups_by_a_part_of_the_id_no_input_carries(question_labels, k):
    """'id:REGEX' groups items whose ids' match (first capture group) is equal: here the
    question number inside the id, though no input names it (as SQuALITY's story)."""
    groups = groups_of(question_labels)
    by_id = content_groups(question_labels.item_ids, question_labels,
                           group_by=r"id:^q(\d\d)a")
    assert sorted(by_id.values()) == sorted(groups.values())
    for seed in SEEDS:
        folds = assign_folds(question_labels.item_ids, k, seed, labels=question_labels,
                             group_by=r"id:^q(\d\d)")
        for members in groups.values():
            assert len({folds[i] for i in members}) == 1, (seed, members)
    # No group: ids the pattern does not match stay alone; without a group, the whole match.
    assert len(content_groups(question_labels.item_ids, question_labels,
                              group_by="id:^zzz")) == len(question_labels.item_ids)
    assert len(content_groups(question_labels.item_ids, question_labels,
                              group_by="id:a[01]")) < len(question_labels.item_ids)
    CVOptions(group_by="id:^q(\\d\\d)").check_group_by(["answer", "question"])  # no input


@pytest.mark.parametrize("bad", ["id:", "id:(", "id:(a)(b)"])
def test_a_bad_id_regex_is_refused_naming_group_by(bad):
    with pytest.raises(CVOptionsError, match=r"group_by .*--group-by"):
        CVOptions(group_by=bad)
