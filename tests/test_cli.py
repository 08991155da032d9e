from __future__ import annotations

import subprocess
import sys

import pytest

from judgealign.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "judgealign.cli", "--help"], check=True,
                         capture_output=True, text=True).stdout
    for command in ("score", "align", "memory", "unalign", "cv", "demo"):
        assert command in out


@pytest.mark.parametrize("make,argv,culprit", [
    (None, ["score", "--rubric", "ml_notebook", "missing.ipynb"], "missing.ipynb"),
    ("bad.ipynb", ["score", "--rubric", "ml_notebook", "bad.ipynb"], "bad.ipynb: invalid notebook"),
    ("nb.ipynb", ["score", "--rubric", "no_such_rubric", "nb.ipynb"], "unknown rubric 'no_such"),
    ("nb.ipynb", ["score", "--rubric", "ml_notebook", "--dimensions", "vibes", "nb.ipynb"],
     "no dimension 'vibes'"),
    ("nb.ipynb", ["score", "--rubric", "ml_notebook", "--config", "broken.toml", "nb.ipynb"],
     "malformed config file broken.toml"),
])
def test_bad_input_gives_one_clear_line_and_exit_2(tmp_path, capsys, notebook_file, make, argv,
                                                   culprit):
    (tmp_path / "bad.ipynb").write_text("{nope")
    (tmp_path / "broken.toml").write_text("[lm\n")
    notebook_file.rename(tmp_path / "nb.ipynb") if notebook_file.exists() else None
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert culprit in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_input_in_a_fresh_process_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "judgealign.cli", "score", "--rubric",
                           "ml_notebook", str(tmp_path / "none.ipynb")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "none.ipynb" in proc.stderr


def test_labels_error_lists_rows(tmp_path, capsys):
    (tmp_path / "l.jsonl").write_text('{"inputs": {"notebook": "x"}, "dimension": "vibes", '
                                      '"score": 2}\n')
    code, _, err = run(capsys, "align", "--rubric", "ml_notebook", "--labels", "l.jsonl",
                       "--out", "j", "--lm", "openai/never-called")
    assert code == 2 and "l.jsonl:1: unknown dimension 'vibes'" in err
    assert not (tmp_path / "j").exists()
