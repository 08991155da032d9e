"""One test per bad input of issue 17: each ends in judgealign's own error naming the file, row
or field (exit code 2 on the command line, no traceback), or is accepted on purpose."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from judgealign import cli
from judgealign.config import load_config
from judgealign.errors import ConfigError, ItemError, LabelError, RubricError
from judgealign.items import read_item_file
from judgealign.labels import LabelSet
from judgealign.signatures.rubric import load_rubric_file
from judgealign.testing import TINY_RUBRIC

ROW = {"item_id": "i1", "inputs": {"answer": "forty-two"}, "dimension": "clarity", "score": 2,
       "rationale": "because"}
CSV_HEADER = "item_id,answer,dimension,score,rationale\n"
CSV_ROW = "i1,forty-two,clarity,2,because\n"
RUBRIC_TOML = """name = "tiny"
scale = [1, 2, 3]
[[inputs]]
name = "answer"
[[dimensions]]
id = "clarity"
name = "Clarity"
description = "Is the answer clear?"
na = "The answer is empty."
[dimensions.levels]
1 = "confusing"
2 = "readable"
3 = "crisp"
"""
CONFIG_TOML = '[lm]\nmodel = "openai/from-file"\n'


def notebook(**cell_changes) -> dict:
    cell = {"cell_type": "code", "source": ["x = 1\n"], "metadata": {}, "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]}
    cell.update(cell_changes)
    return {"cells": [{"cell_type": "markdown", "source": "# t", "metadata": {}}, cell],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# Loaders of every kind of user file: (file name, valid content, load function, error class).
FILES = {
    "jsonl": ("labels.jsonl", json.dumps(ROW) + "\n",
              lambda p, r: LabelSet.from_jsonl(p, rubric=r), LabelError),
    "csv": ("labels.csv", CSV_HEADER + CSV_ROW, lambda p, r: LabelSet.from_csv(p, rubric=r),
            LabelError),
    "rubric-toml": ("rubric.toml", RUBRIC_TOML, lambda p, r: load_rubric_file(p), RubricError),
    "rubric-yaml": ("rubric.yaml", yaml.safe_dump(TINY_RUBRIC),
                    lambda p, r: load_rubric_file(p), RubricError),
    "config": ("judgealign.toml", CONFIG_TOML, lambda p, r: load_config(p, environ={}),
               ConfigError),
    "notebook": ("nb.ipynb", json.dumps(notebook()), lambda p, r: read_item_file(p), ItemError),
    "text": ("answer.txt", "plain text\n", lambda p, r: read_item_file(p), ItemError),
}


# --- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_latin1_byte_is_refused_naming_the_file_and_line(tmp_path, tiny_rubric, kind):
    name, text, load, error = FILES[kind]
    lines = text.encode("utf-8").split(b"\n")
    # Put 0xE9 (é in Latin-1) on the second line, inside text every format allows.
    lines.insert(1, b"\xe9" if kind in ("text",) else b"# caf\xe9")
    path = write(tmp_path / name, b"\n".join(lines))
    with pytest.raises(error) as err:
        load(path, tiny_rubric)
    message = str(err.value)
    assert name in message and "not UTF-8" in message and "0xE9" in message
    assert "line 2" in message


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, tiny_rubric, kind):
    name, text, load, _ = FILES[kind]
    plain = load(write(tmp_path / name, text), tiny_rubric)
    with_bom = load(write(tmp_path / name, b"\xef\xbb\xbf" + text.encode("utf-8")), tiny_rubric)
    if isinstance(plain, LabelSet):
        assert [lab.score for lab in with_bom] == [lab.score for lab in plain] == [2]
        assert with_bom.labels[0].item_id == "i1"
    else:
        assert with_bom == plain


# --- CSV ----------------------------------------------------------------------------------------


def test_a_csv_cell_longer_than_csv_default_limit_is_read(tmp_path, tiny_rubric):
    before = csv.field_size_limit()
    answer = "x" * 200_000  # csv's default limit is 131,072 characters
    path = write(tmp_path / "big.csv", CSV_HEADER + f'i1,"{answer}",clarity,2,ok\n')
    (label,) = LabelSet.from_csv(path, rubric=tiny_rubric)
    assert label.inputs["answer"] == answer
    assert csv.field_size_limit() == before  # the process-wide limit is left as it was


@pytest.mark.parametrize("line,problem", [
    ("i1,forty-two,clarity,2,because,EXTRA\n", "6 cells, more than the 5 columns"),
    ("i1,forty-two,clarity,2\n", "4 cells, fewer than the 5 columns"),
    ("i1,forty-two,clarity,,because\n", "got '' (write 'N/A' for not applicable)"),
])
def test_csv_rows_of_the_wrong_width_or_blank_score_are_errors(tmp_path, tiny_rubric, line,
                                                               problem):
    path = write(tmp_path / "l.csv", CSV_HEADER + CSV_ROW + line)
    with pytest.raises(LabelError) as err:
        LabelSet.from_csv(path, rubric=tiny_rubric)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(f"{path}:3: ") and problem in str(err.value)


@pytest.mark.parametrize("header,problem", [
    ("item_id,answer,dimension,rationale\n", "missing column(s) 'score'"),
    ("item_id,answer,score,rationale\n", "missing column(s) 'dimension'"),
    ("item_id,answer,answer,dimension,score\n", "duplicate column(s) ['answer']"),
    ("item_id,,dimension,score\n", "column(s) 2 of the header have no name"),
])
def test_csv_header_problems_are_named(tmp_path, tiny_rubric, header, problem):
    path = write(tmp_path / "l.csv", header + "i1,x,clarity,2\n")
    with pytest.raises(LabelError, match="l.csv:1: ") as err:
        LabelSet.from_csv(path, rubric=tiny_rubric)
    assert problem in str(err.value) and "N/A" not in str(err.value)


def test_csv_double_at_is_a_literal_at(tmp_path, tiny_rubric):
    path = write(tmp_path / "l.csv", CSV_HEADER + "i1,@@decorator,clarity,2,ok\n")
    (label,) = LabelSet.from_csv(path, rubric=tiny_rubric)
    assert label.inputs["answer"] == "@decorator"


# --- N/A and blank scores -----------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["N/A", "n/a", "NA", "na", " N/A "])
def test_na_spellings_that_mean_na(tmp_path, tiny_rubric, spelling):
    path = write(tmp_path / "l.jsonl", json.dumps({**ROW, "score": spelling}) + "\n")
    (label,) = LabelSet.from_jsonl(path, rubric=tiny_rubric)
    assert label.score is None


@pytest.mark.parametrize("spelling", ["", " ", "none", "None", "null", "n.a.",
                                      "not applicable", None])
def test_na_look_alikes_are_errors_naming_the_row(tmp_path, tiny_rubric, spelling):
    path = write(tmp_path / "l.jsonl", json.dumps(ROW) + "\n"
                 + json.dumps({**ROW, "item_id": "i2", "score": spelling}) + "\n")
    with pytest.raises(LabelError) as err:
        LabelSet.from_jsonl(path, rubric=tiny_rubric)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}:2: field 'score'") and "N/A" in problem


def test_python_none_is_na_in_records(tiny_rubric):
    (label,) = LabelSet.from_records([{**ROW, "score": None}], rubric=tiny_rubric)
    assert label.score is None


# --- paths --------------------------------------------------------------------------------------


def test_paths_longer_than_a_file_name_may_be_are_named(tmp_path, tiny_rubric):
    long = "x" * 300 + ".jsonl"
    for load, error in ((lambda p: LabelSet.from_jsonl(p), LabelError),
                        (lambda p: LabelSet.from_csv(p), LabelError),
                        (load_rubric_file, RubricError),
                        (lambda p: load_config(p, environ={}), ConfigError),
                        (read_item_file, ItemError)):
        with pytest.raises(error, match="too long.*xxxx"):
            load(tmp_path / long)
    path = write(tmp_path / "l.jsonl", json.dumps({**ROW, "inputs": {"answer": {"path": long}}}))
    with pytest.raises(LabelError, match=r"l.jsonl:1: input 'answer': .*too long"):
        LabelSet.from_jsonl(path, rubric=tiny_rubric)


def test_a_nul_byte_in_a_path_is_named(tmp_path, tiny_rubric):
    path = write(tmp_path / "l.jsonl",
                 json.dumps({**ROW, "inputs": {"answer": {"path": "a\x00b"}}}) + "\n")
    with pytest.raises(LabelError, match=r"l.jsonl:1: input 'answer': .*NUL byte"):
        LabelSet.from_jsonl(path, rubric=tiny_rubric)
    for load, error in ((LabelSet.from_jsonl, LabelError), (load_rubric_file, RubricError),
                        (lambda p: load_config(p, environ={}), ConfigError),
                        (read_item_file, ItemError)):
        with pytest.raises(error, match="NUL byte"):
            load(str(tmp_path / "a\x00b.toml"))


@pytest.fixture
def outside(tmp_path):
    """A label folder ``labels/`` and a secret file beside it, outside that folder."""
    (tmp_path / "labels").mkdir()
    secret = write(tmp_path / "secret.txt", "do not read me")
    write(tmp_path / "labels" / "inside.txt", "an answer")
    return tmp_path / "labels", secret


@pytest.mark.parametrize("target", ["/etc/hostname", "../../../etc/hostname", "../secret.txt",
                                    "ABSOLUTE", "link.txt"])
def test_input_paths_leading_outside_the_label_folder_are_refused(outside, tiny_rubric, target):
    folder, secret = outside
    (folder / "link.txt").symlink_to(secret)
    target = str(secret) if target == "ABSOLUTE" else target
    path = write(folder / "l.jsonl", json.dumps(ROW) + "\n"
                 + json.dumps({**ROW, "item_id": "i2", "inputs": {"answer": {"path": target}}}))
    with pytest.raises(LabelError) as err:
        LabelSet.from_jsonl(path, rubric=tiny_rubric)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}:2: input 'answer': path ") and "leads outside" in problem
    csv_path = write(folder / "l.csv", CSV_HEADER + f"i2,@{target},clarity,2,x\n")
    with pytest.raises(LabelError, match=r"l.csv:2: input 'answer': path .* leads outside"):
        LabelSet.from_csv(csv_path, rubric=tiny_rubric)


def test_an_allowed_root_lets_paths_out_of_the_label_folder(outside, tiny_rubric):
    folder, secret = outside
    (folder / "link.txt").symlink_to(secret)
    rows = [{**ROW, "inputs": {"answer": {"path": "../secret.txt"}}},
            {**ROW, "item_id": "i2", "inputs": {"answer": {"path": "link.txt"}}},
            {**ROW, "item_id": "i3", "inputs": {"answer": {"path": "inside.txt"}}}]
    path = write(folder / "l.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    labels = LabelSet.from_jsonl(path, rubric=tiny_rubric, allowed_root=secret.parent)
    assert [lab.inputs["answer"] for lab in labels] == ["do not read me"] * 2 + ["an answer"]
    with pytest.raises(LabelError, match="allowed root .* is not a folder"):
        LabelSet.from_jsonl(path, rubric=tiny_rubric, allowed_root=secret)


# --- deep nesting and huge numbers --------------------------------------------------------------


DEEP = 5000


@pytest.mark.parametrize("kind,text", [
    ("jsonl", '{"item_id": "i1", "score": ' + "[" * DEEP + "]" * DEEP + "}"),
    ("notebook", '{"cells": ' + "[" * DEEP + "]" * DEEP + "}"),
    ("rubric-toml", "name = " + "[" * DEEP + "]" * DEEP),
    ("rubric-yaml", "name: " + "[" * DEEP + "]" * DEEP),
    ("config", "x = " + "[" * DEEP + "]" * DEEP),
])
def test_deep_nesting_is_an_error_naming_the_file(tmp_path, tiny_rubric, kind, text):
    name, _, load, error = FILES[kind]
    path = write(tmp_path / name, text + "\n")
    with pytest.raises(error, match=r"nested too deeply") as err:
        load(path, tiny_rubric)
    assert name in str(err.value)


@pytest.mark.parametrize("kind,text", [
    ("jsonl", json.dumps(ROW).replace('"score": 2', '"score": ' + "9" * 5000)),
    ("notebook", '{"cells": [], "nbformat": ' + "9" * 5000 + "}"),
    ("rubric-toml", RUBRIC_TOML.replace("scale = [1, 2, 3]", "scale = [1, 2, " + "9" * 5000 + "]")),
    ("rubric-yaml", yaml.safe_dump(TINY_RUBRIC).replace("- 3", "- " + "9" * 5000)),
    ("config", "[lm]\nmax_tokens = " + "9" * 5000),
])
def test_a_5000_digit_integer_is_an_error_naming_the_file(tmp_path, tiny_rubric, kind, text):
    name, _, load, error = FILES[kind]
    path = write(tmp_path / name, text + "\n")
    with pytest.raises(error) as err:
        load(path, tiny_rubric)
    assert name in str(err.value) and "digits" in str(err.value)


# --- notebooks of the wrong shape ---------------------------------------------------------------


@pytest.mark.parametrize("changes,problem", [
    ({"source": [1, 2]}, "cell 2: 'source' must be text or a list of text; item 1 is a number"),
    ({"source": {"a": 1}}, "cell 2: 'source' must be text or a list of text, got an object"),
    ({"cell_type": 5}, "cell 2: 'cell_type' must be text"),
    ({"outputs": 5}, "cell 2: 'outputs' must be a list, got a number"),
    ({"outputs": [5]}, "cell 2, output 1 must be an object"),
    ({"outputs": [{"output_type": "execute_result", "data": "oops"}]},
     "cell 2, output 1: 'data' must be an object, got text"),
    ({"outputs": [{"output_type": "stream", "text": [1, 2]}]},
     "cell 2, output 1: 'text' must be text or a list of text"),
    ({"outputs": [{"output_type": "display_data", "data": {"text/plain": 7}}]},
     "cell 2, output 1: 'data.text/plain' must be text"),
])
def test_notebooks_of_the_wrong_shape_name_file_and_cell(tmp_path, tiny_rubric, changes,
                                                         problem):
    path = write(tmp_path / "nb.ipynb", json.dumps(notebook(**changes)))
    with pytest.raises(ItemError) as err:
        read_item_file(path)
    assert str(err.value) == f"{path}: {problem}" or str(err.value).startswith(f"{path}: {problem}")
    # The same notebook given as a label input: the error names the label row too.
    labels = write(tmp_path / "l.jsonl",
                   json.dumps({**ROW, "inputs": {"answer": {"path": "nb.ipynb"}}}) + "\n")
    with pytest.raises(LabelError, match=r"l.jsonl:1: input 'answer': .*nb.ipynb: cell 2"):
        LabelSet.from_jsonl(labels, rubric=tiny_rubric)


def test_error_outputs_with_odd_fields_still_render(tmp_path):
    path = write(tmp_path / "nb.ipynb", json.dumps(notebook(outputs=[
        {"output_type": "error", "ename": ["x"], "evalue": 3, "traceback": []}])))
    assert "<a list>: 3" in read_item_file(path)


# --- the command line ---------------------------------------------------------------------------


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


CV = ["cv", "--rubric", "ml_notebook", "--labels", "missing.jsonl"]


@pytest.mark.parametrize("argv,named", [
    (CV + ["--folds", "1"], "--folds: must be an integer >= 2, got '1'"),
    (CV + ["--folds", "0"], "--folds"),
    (CV + ["--folds", "four"], "--folds"),
    (CV + ["--bootstrap", "0"], "--bootstrap: must be an integer from 1 to 1,000,000"),
    (CV + ["--bootstrap", "-5"], "--bootstrap"),
    (CV + ["--limit", "0"], "--limit: must be an integer >= 2"),
    (CV + ["--limit", "1"], "--limit"),
    (CV + ["--limit", "3"], "--limit 3 leaves fewer items than --folds 4"),
    (CV + ["--variants", "baseline,bogus"], "unknown variant(s) bogus; known: baseline"),
    (CV + ["--variants", ","], "--variants: names no variant"),
    (CV + ["--seed", "-1"], "--seed"),
    (CV + ["--out", "afile"], "--out afile: afile is a file, not a folder"),
    (CV + ["--out", "afile/sub"], "afile is a file, not a folder"),
    (["demo", "--folds", "1"], "--folds"),
    (["demo", "--variants", "nope"], "unknown variant(s) nope"),
    (["align", "--rubric", "ml_notebook", "--labels", "l.jsonl", "--out", "afile"],
     "afile is a file"),
])
def test_bad_flags_stop_before_any_work(tmp_path, capsys, argv, named):
    (tmp_path / "afile").write_text("not a folder")
    code, out, err = run(capsys, *argv)
    assert code == 2 and named in err and "Traceback" not in err
    assert not (tmp_path / "reports").exists()  # nothing ran (the labels do not even exist)


def test_variant_names_cover_the_evaluation_registry():
    from judgealign.evaluation.crossval import KNOWN_VARIANTS
    from judgealign.variant_names import VARIANT_NAMES

    assert set(KNOWN_VARIANTS) <= set(VARIANT_NAMES)
    assert len(set(VARIANT_NAMES)) == len(VARIANT_NAMES)


def test_an_unexpected_exception_is_one_line_with_a_hint(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli._COMMANDS, "memory", broken)
    code, _, err = run(capsys, "memory", "show", "somewhere")
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error: ZeroDivisionError: division by zero -- this is a bug" in err
    assert "JUDGEALIGN_DEBUG=1" in err
    monkeypatch.setenv("JUDGEALIGN_DEBUG", "1")
    code, _, err = run(capsys, "memory", "show", "somewhere")
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err


def test_a_refused_write_is_an_error_not_a_bug(capsys, monkeypatch):
    def refused(args):
        raise PermissionError(13, "Permission denied", "reports/x/report.md")

    monkeypatch.setitem(cli._COMMANDS, "memory", refused)
    code, _, err = run(capsys, "memory", "show", "somewhere")
    assert code == 1 and err.strip() == "judgealign: error: Permission denied: reports/x/report.md"


def test_score_exits_1_and_counts_failed_judgments(tmp_path, capsys, monkeypatch):
    import dspy

    from judgealign import build
    from judgealign.testing import dimension_of, scripted_lm

    def answer(prompt: str):
        if dimension_of(prompt) == "Clarity":
            return "no JSON here"  # unparseable: the judgment fails
        return {"score": "2", "rationale": "fine"}

    monkeypatch.setattr(build, "judge_lm", lambda settings: scripted_lm(answer))
    write(tmp_path / "tiny.yaml", yaml.safe_dump(TINY_RUBRIC))
    write(tmp_path / "a.txt", "an answer")
    write(tmp_path / "b.txt", "another")
    with dspy.context(lm=None):
        code, out, err = run(capsys, "score", "--rubric", "./tiny.yaml", "a.txt", "b.txt")
    assert code == 1 and "FAILED" in out
    assert err.strip().splitlines()[-1] == "judgealign: 2 of 4 judgments failed"
    monkeypatch.setattr(build, "judge_lm",
                        lambda settings: scripted_lm(lambda p: {"score": "3", "rationale": "ok"}))
    code, out, err = run(capsys, "score", "--rubric", "./tiny.yaml", "a.txt")
    assert code == 0 and "failed" not in err


@pytest.mark.parametrize("make,argv,named", [
    (lambda d: write(d / "nb.ipynb", json.dumps(notebook(outputs=5))),
     ["score", "--rubric", "ml_notebook", "nb.ipynb"], "nb.ipynb: cell 2: 'outputs'"),
    (lambda d: write(d / "l.jsonl", json.dumps(
        {**ROW, "inputs": {"notebook": {"path": "/etc/hostname"}}}) + "\n"),
     ["align", "--rubric", "ml_notebook", "--labels", "l.jsonl", "--out", "j", "--lm",
      "openai/never-called"], "l.jsonl:1: input 'notebook': path '/etc/hostname' leads outside"),
    (lambda d: write(d / "r.toml", b"name = 'caf\xe9'\n"),
     ["score", "--rubric", "r.toml", "x.txt"], "r.toml: not UTF-8 text (byte 0xE9 on line 1)"),
    (lambda d: write(d / "judgealign.toml", "[lm]\nmodel = " + "[" * DEEP + "]" * DEEP),
     ["score", "--rubric", "ml_notebook", "x.txt"], "judgealign.toml: nested too deeply"),
])
def test_cli_bad_files_in_a_fresh_process(tmp_path, make, argv, named):
    make(tmp_path)
    write(tmp_path / "x.txt", "text")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGEALIGN_")}
    proc = subprocess.run([sys.executable, "-m", "judgealign.cli", *argv], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr


# --- text that is not Unicode -------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("inputs", {"answer": "a\\ud800"}),
                                         ("rationale", "\\udc80"), ("item_id", "x\\udfff"),
                                         ("dimension", "clarity\\ud800")])
def test_lone_surrogate_escapes_in_labels_are_named(tmp_path, tiny_rubric, field, value):
    row = json.dumps({**ROW, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"',
                                                            json.dumps(value).replace("\\\\", "\\"))
    path = write(tmp_path / "l.jsonl", row + "\n")
    with pytest.raises(LabelError, match=r"l.jsonl:1: .*not valid Unicode text"):
        LabelSet.from_jsonl(path, rubric=tiny_rubric)


def test_lone_surrogate_escapes_in_a_yaml_rubric_and_the_environment(tmp_path):
    path = write(tmp_path / "r.yaml",
                 yaml.safe_dump({**TINY_RUBRIC, "description": "PLACEHOLDER"}).replace(
                     "PLACEHOLDER", '"x\\ud800"'))
    with pytest.raises(RubricError, match=r"r.yaml: description: not valid Unicode text"):
        load_rubric_file(path)
    with pytest.raises(ConfigError, match="JUDGEALIGN_LM__MODEL: the value is not UTF-8"):
        load_config(None, environ={"JUDGEALIGN_LM__MODEL": "openai/\udce9"})


def test_a_label_row_with_a_key_twice_is_refused(tmp_path, tiny_rubric):
    path = tmp_path / "l.jsonl"
    path.write_text('{"item_id": "a", "inputs": {"answer": "x"}, "dimension": "correctness", '
                    '"score": 1, "score": 3}\n')
    with pytest.raises(LabelError, match=r"l\.jsonl:1: .*'score' appears twice"):
        LabelSet.from_jsonl(path, rubric=tiny_rubric)


def test_an_embedder_other_than_hashing_needs_a_model():
    with pytest.raises(ConfigError, match="needs model"):
        load_config(environ={}, overrides={"embedder": {"kind": "litellm"}})
