from __future__ import annotations

import json

import pytest

from judgealign.errors import LabelError
from judgealign.labels import LabelSet, aggregate


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(item="i1", dim="correctness", score=2, rater=None, answer="forty-two", **extra):
    out = {"item_id": item, "inputs": {"answer": answer}, "dimension": dim, "score": score,
           "rationale": "because", **extra}
    if rater:
        out["rater"] = rater
    return out


def test_jsonl_with_file_inputs_and_na(tmp_path, tiny_rubric, notebook_file):
    (tmp_path / "a.txt").write_text("the answer text")
    path = write_jsonl(tmp_path / "labels.jsonl", [
        {"item_id": "x", "inputs": {"answer": {"path": "a.txt"}}, "dimension": "Clarity",
         "score": "N/A", "rationale": ""},
        {"inputs": {"answer": "inline"}, "dimension": "correctness", "score": 3},
    ])
    labels = LabelSet.from_jsonl(path, rubric=tiny_rubric)
    assert len(labels) == 2
    first, second = labels.labels
    assert first.inputs == {"answer": "the answer text"} and first.score is None
    assert first.dimension == "clarity" and first.source.endswith("labels.jsonl:1")
    assert second.item_id.startswith("item-")  # content hash
    assert LabelSet.from_jsonl(path).labels[1].item_id == second.item_id  # stable


def test_every_bad_row_is_reported_with_file_and_line(tmp_path, tiny_rubric):
    path = write_jsonl(tmp_path / "bad.jsonl", [
        row(),
        "{not json",
        row(item="i2", dim="style"),
        row(item="i3", score=7),
        row(item="i4", dim="correctness", score="N/A"),
        {"item_id": "i5", "inputs": {"question": "only a question"}, "dimension": "clarity",
         "score": 1},
        row(item="i1", answer="other content"),
        {"inputs": {"answer": "x"}, "dimension": "clarity"},
    ])
    with pytest.raises(LabelError) as err:
        LabelSet.from_jsonl(path, rubric=tiny_rubric)
    text = str(err.value)
    assert "bad.jsonl:2: invalid JSON" in text
    assert "bad.jsonl:8: missing field(s) ['score']" in text
    assert len(err.value.problems) == 2  # parse errors stop before rubric checks
    fixed = write_jsonl(tmp_path / "bad2.jsonl", [
        row(), row(item="i2", dim="style"), row(item="i3", score=7),
        row(item="i4", score="N/A"),
        {"item_id": "i5", "inputs": {"question": "q"}, "dimension": "clarity", "score": 1},
    ])
    with pytest.raises(LabelError) as err:
        LabelSet.from_jsonl(fixed, rubric=tiny_rubric)
    problems = err.value.problems
    assert any(p.endswith("bad2.jsonl:2: unknown dimension 'style' for rubric 'tiny' "
                          "(known: correctness, clarity)") for p in problems)
    assert any("bad2.jsonl:3: score 7 is not on the scale [1, 2, 3]" in p for p in problems)
    assert any("bad2.jsonl:4: N/A is not allowed for dimension 'correctness'" in p
               for p in problems)
    assert any("bad2.jsonl:5: missing item text for input(s) ['answer']" in p for p in problems)
    assert len(problems) == 4


def test_duplicate_id_with_different_content_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [row(), row(answer="other")])
    with pytest.raises(LabelError, match="dup.jsonl:2: item id 'i1' was used before"):
        LabelSet.from_jsonl(path)


def test_strict_mode_fails_on_the_first(tmp_path, tiny_rubric):
    path = write_jsonl(tmp_path / "s.jsonl", [row(), row(item="i2", score=9),
                                              row(item="i3", score=8)])
    with pytest.raises(LabelError) as err:
        LabelSet.from_jsonl(path, rubric=tiny_rubric, strict=True)
    assert "s.jsonl:2" in str(err.value) and "s.jsonl:3" not in str(err.value)


def test_csv_loader(tmp_path, tiny_rubric):
    (tmp_path / "ans.txt").write_text("from a file")
    path = tmp_path / "labels.csv"
    path.write_text("item_id,answer,dimension,score,rationale,rater\n"
                    "a,@ans.txt,correctness,3,fine,bob\n"
                    "b,inline text,clarity,N/A,,\n"
                    "c,x,correctness,five,,\n")
    with pytest.raises(LabelError, match=r"labels.csv:4: field 'score'"):
        LabelSet.from_csv(path, rubric=tiny_rubric)
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")
    labels = LabelSet.from_csv(path, rubric=tiny_rubric)
    assert [lab.inputs["answer"] for lab in labels] == ["from a file", "inline text"]
    assert labels.labels[0].rater == "bob" and labels.labels[1].score is None


def test_rater_aggregation_policy(tiny_rubric):
    assert aggregate([1, 2, 3]) == 2
    assert aggregate([1, 3]) == 1  # lower median: always an actual level
    assert aggregate([None, None, 2]) is None
    assert aggregate([None, 2, 3]) == 2
    rows = [row(score=1, rater="a"), row(score=3, rater="b"), row(score=3, rater="c")]
    rows[0]["rationale"], rows[1]["rationale"] = "too short", "complete"
    labels = LabelSet.from_records(rows, rubric=tiny_rubric)
    (episode,) = labels.episodes("correctness")
    assert episode.score == 3
    assert episode.rationale == "too short | complete | because"


def test_one_rater_scoring_twice_differently_is_reported(tiny_rubric):
    rows = [row(score=1, rater="a"), row(score=3, rater="a")]
    with pytest.raises(LabelError, match="rater 'a' already scored item 'i1'"):
        LabelSet.from_records(rows, rubric=tiny_rubric)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(LabelError, match="no labels"):
        LabelSet.from_jsonl(path)
    with pytest.raises(LabelError, match="label file not found"):
        LabelSet.from_jsonl(tmp_path / "missing.jsonl")


def test_id_fields_are_text_or_integers(tmp_path, tiny_rubric):
    labels = LabelSet.from_records([row(item=7, rater=3)], rubric=tiny_rubric)
    assert labels.labels[0].item_id == "7" and labels.labels[0].rater == "3"
    with pytest.raises(LabelError, match="record 1: field 'item_id' must be text or an integer"):
        LabelSet.from_records([row(item=1.5)], rubric=tiny_rubric)
    with pytest.raises(LabelError, match="field 'rater' must be text or an integer"):
        LabelSet.from_records([row(rater=["a"])], rubric=tiny_rubric)


def test_path_inputs_take_no_other_key(tmp_path, tiny_rubric):
    (tmp_path / "a.txt").write_text("x")
    rows = [{"inputs": {"answer": {"path": "a.txt", "encoding": "latin-1"}},
             "dimension": "clarity", "score": 1}]
    with pytest.raises(LabelError, match=r"takes no other key \(got \['encoding'\]\)"):
        LabelSet.from_records(rows, rubric=tiny_rubric, base_dir=tmp_path)


def test_jsonl_lines_end_at_newlines_only(tmp_path, tiny_rubric):
    # A raw U+2028 inside a JSON string is text, not a line end (str.splitlines splits there).
    text = "answer\u2028with\x0cbreaks"
    path = write_jsonl(tmp_path / "l.jsonl", [row(answer=text)])
    path.write_text(path.read_text().replace("\\u2028", "\u2028"), encoding="utf-8")
    (label,) = LabelSet.from_jsonl(path, rubric=tiny_rubric)
    assert label.inputs["answer"] == text


def test_csv_line_numbers_count_multiline_cells(tmp_path, tiny_rubric):
    path = tmp_path / "l.csv"
    path.write_text('item_id,answer,dimension,score\n\na,"two\nlines",clarity,2\nb,x,clarity,9\n')
    with pytest.raises(LabelError) as err:
        LabelSet.from_csv(path, rubric=tiny_rubric)
    assert err.value.problems == [f"{path}:5: score 9 is not on the scale [1, 2, 3]"]


def test_from_file_reads_csv_by_its_suffix_and_jsonl_otherwise(tmp_path, tiny_rubric):
    from judgealign.labels import LabelSet

    (tmp_path / "l.csv").write_text("item_id,answer,dimension,score\na,x,correctness,2\n")
    (tmp_path / "l.jsonl").write_text('{"item_id": "a", "inputs": {"answer": "x"}, '
                                      '"dimension": "correctness", "score": 2}\n')
    for name in ("l.csv", "l.jsonl"):
        labels = LabelSet.from_file(tmp_path / name, rubric=tiny_rubric)
        assert [(lab.item_id, lab.score) for lab in labels] == [("a", 2)]
