"""A bad-input campaign against the CLI: every case must end as the README promises.

Run from the repository root::

    python -m benchmarks.bad_inputs             # every case, writes its BENCHMARKS.md section
    python -m benchmarks.bad_inputs --no-write  # print only

Each case builds a bad file, flag or saved-judge edit in a fresh folder and runs
``judgealign.cli.main`` in-process (an OpenAI-compatible fake LM on 127.0.0.1 answers the rare
case that reaches an LM). Expected: exit code 2, one line on stderr naming the file, row or
field, no traceback, no "internal error"; for saved judges also: not a byte or mtime changed
inside the judge or in any folder a link points to. Cases marked ``ok`` are inputs the
README says are accepted (a UTF-8 BOM, say) and must exit 0. Outcomes are counted per kind.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from benchmarks._report import command_line, emit, machine_info, machine_markdown, table  # noqa: E402

SECTION = "bad_inputs"


@dataclass
class Case:
    kind: str
    name: str
    setup: Callable[[Path], list[str]]  # writes files into the folder, returns argv
    expect: str = "error"  # "error" (exit 2, culprit named) or "ok" (exit 0)
    culprit: str | None = None  # text stderr must contain; default: the first file argument


# --- inputs ----------------------------------------------------------------------------------

TINY = """name = "tiny"
title = "Tiny"
description = "Judges short answers."
scale = [1, 2, 3]
[[inputs]]
name = "answer"
description = "the answer"
[[dimensions]]
id = "correctness"
name = "Correctness"
description = "Is it right?"
levels = { 1 = "wrong", 2 = "partly", 3 = "right" }
"""
ROW = {"item_id": "a1", "inputs": {"answer": "Water boils at 100 C."}, "dimension": "correctness",
       "score": 3, "rationale": "right"}


def _labels(rows: Sequence[object] | None = None, *, raw: bytes | None = None,
            name: str = "labels.jsonl") -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "tiny.toml").write_text(TINY)
        data = raw if raw is not None else "".join(
            (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows or []).encode()
        (d / name).write_bytes(data)
        return ["align", "--rubric", "tiny.toml", "--labels", name, "--out", "judge"]
    return setup


def _row(**change: object) -> dict:
    row = json.loads(json.dumps(ROW))
    for key, value in change.items():
        if value is _DROP:
            row.pop(key, None)
        else:
            row[key] = value
    return row


_DROP = object()


def label_cases() -> list[Case]:
    cases = []
    deep = "[" * 20000 + "]" * 20000
    bad_rows = {
        "invalid JSON": ["{nope"],
        "deeply nested JSON": [deep],
        "5000-digit score": ['{"item_id": "a", "inputs": {"answer": "x"}, "dimension": '
                             '"correctness", "score": ' + "9" * 5000 + "}"],
        "score 99": [_row(score=99)], "score -1": [_row(score=-1)], "score 2.5": [_row(score=2.5)],
        "score true": [_row(score=True)], "score empty string": [_row(score="")],
        "score none": [_row(score="none")], "score null word": [_row(score="null")],
        "score n.a.": [_row(score="n.a.")], "score N/A not allowed": [_row(score="N/A")],
        "score list": [_row(score=[1])], "no score": [_row(score=_DROP)],
        "no dimension": [_row(dimension=_DROP)], "no inputs": [_row(inputs=_DROP)],
        "unknown dimension": [_row(dimension="vibes")], "empty dimension": [_row(dimension="")],
        "dimension number": [_row(dimension=3)], "inputs list": [_row(inputs=["x"])],
        "inputs empty": [_row(inputs={})], "input number": [_row(inputs={"answer": 5})],
        "unknown input": [_row(inputs={"answer": "x", "extra": "y"})],
        "path outside": [_row(inputs={"answer": {"path": "/etc/hostname"}})],
        "path traversal": [_row(inputs={"answer": {"path": "../../../etc/hostname"}})],
        "path with NUL": [_row(inputs={"answer": {"path": "a\x00b"}})],
        "path too long": [_row(inputs={"answer": {"path": "x" * 300}})],
        "missing path": [_row(inputs={"answer": {"path": "nope.txt"}})],
        "rationale list": [_row(rationale=["a"])], "item_id object": [_row(item_id={"a": 1})],
        "rater object": [_row(rater={"a": 1})], "row is a list": [[1, 2]],
        "row is a string": ['"just text"'], "row is null": ["null"],
        "duplicate key row": ['{"item_id": "a", "item_id": "b", "inputs": {"answer": "x"}, '
                              '"dimension": "correctness", "score": 1, "score": 2}'],
    }
    for name, rows in bad_rows.items():
        cases.append(Case("labels (JSONL)", name, _labels(rows), culprit="labels.jsonl"))
    raws = {"byte 0xE9": b'{"item_id": "a\xe9", "inputs": {"answer": "x"}}\n',
            "empty file": b"", "whitespace only": b"  \n\n", "binary": bytes(range(256)),
            "UTF-16": json.dumps(ROW).encode("utf-16")}
    for name, raw in raws.items():
        cases.append(Case("labels (JSONL)", name, _labels(raw=raw), culprit="labels.jsonl"))
    cases.append(Case("labels (JSONL)", "UTF-8 BOM is accepted",
                      _labels(raw=b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\n"),
                      expect="ok"))
    csv_header = "item_id,answer,dimension,score,rationale\n"
    csvs = {
        "no score column": "item_id,answer,dimension\na1,x,correctness\n",
        "cells beyond header": csv_header + "a1,x,correctness,3,ok,EXTRA\n",
        "blank score": csv_header + "a1,x,correctness,,ok\n",
        "byte 0xE9": None, "unclosed quote": csv_header + 'a1,"x,correctness,3,ok\n',
        "header only": csv_header, "score words": csv_header + "a1,x,correctness,three,ok\n",
    }
    for name, text in csvs.items():
        raw = (csv_header + "a1,caf\xe9,correctness,3,ok\n").encode("latin-1") if text is None \
            else text.encode()
        cases.append(Case("labels (CSV)", name, _labels(raw=raw, name="labels.csv"),
                          culprit="labels.csv"))
    cases.append(Case("labels (CSV)", "a cell over 131,072 characters is accepted",
                      _labels(raw=(csv_header + f"a1,{'x' * 140000},correctness,3,ok\n")
                              .encode(), name="labels.csv"), expect="ok"))
    cases.append(Case("labels (CSV)", "UTF-8 BOM is accepted",
                      _labels(raw=b"\xef\xbb\xbf" + (csv_header + "a1,x,correctness,3,ok\n")
                              .encode(), name="labels.csv"), expect="ok"))
    return cases


def _rubric(text: str | bytes, name: str = "rubric.toml") -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        data = text.encode() if isinstance(text, str) else text
        (d / name).write_bytes(data)
        (d / "a.txt").write_text("an answer")
        return ["score", "--rubric", name, "a.txt"]
    return setup


def rubric_cases() -> list[Case]:
    variants = {
        "malformed TOML": "name = \n", "empty file": "",
        "no dimensions": TINY.split("[[dimensions]]")[0],
        "scale of one level": TINY.replace("scale = [1, 2, 3]", "scale = [1]"),
        "scale of words": TINY.replace("scale = [1, 2, 3]", 'scale = ["a", "b"]'),
        "level outside scale": TINY.replace("3 = \"right\"", "7 = \"right\""),
        "duplicate dimension": TINY + TINY[TINY.index("[[dimensions]]"):],
        "bad dimension id": TINY.replace('id = "correctness"', 'id = "no way!"'),
        "huge integer": TINY.replace("scale = [1, 2, 3]", "scale = [1, " + "9" * 5000 + "]"),
        "deeply nested": "x = " + "[" * 5000 + "]" * 5000 + "\n",
        "byte 0xE9": None, "no inputs": TINY.replace('[[inputs]]\nname = "answer"\n'
                                                    'description = "the answer"\n', ""),
    }
    cases = []
    for name, text in variants.items():
        data = TINY.replace("Tiny", "Tin\xe9").encode("latin-1") if text is None else text
        cases.append(Case("rubric", name, _rubric(data), culprit="rubric.toml"))
    yaml_bad = {"malformed YAML": "name: [unclosed\n", "YAML list": "- 1\n- 2\n",
                "deeply nested YAML": "x: " + "[" * 5000 + "]" * 5000 + "\n",
                "YAML with a python tag": "!!python/object/apply:os.system ['echo hi']\n"}
    for name, text in yaml_bad.items():
        cases.append(Case("rubric", name, _rubric(text, "rubric.yaml"), culprit="rubric.yaml"))
    cases.append(Case("rubric", "unknown suffix", _rubric(TINY, "rubric.json"),
                      culprit="rubric.json"))
    cases.append(Case("rubric", "unknown built-in name",
                      lambda d: (d / "a.txt").write_text("x") and ["score", "--rubric",
                                                                   "no_such_rubric", "a.txt"],
                      culprit="no_such_rubric"))
    return cases


def _config(text: str | bytes | None = None, env: dict[str, str] | None = None
            ) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "tiny.toml").write_text(TINY)
        (d / "a.txt").write_text("an answer")
        argv = ["score", "--rubric", "tiny.toml", "a.txt"]
        if text is not None:
            (d / "j.toml").write_bytes(text.encode() if isinstance(text, str) else text)
            argv += ["--config", "j.toml"]
        for key, value in (env or {}).items():
            os.environ[key] = value
        return argv
    return setup


def config_cases() -> list[Case]:
    files = {"malformed": "[lm\n", "unknown section": "[vibes]\nx = 1\n",
             "unknown key": "[lm]\nmodle = \"x\"\n", "temperature word": "[lm]\ntemperature = "
             "\"hot\"\n", "negative k": "[memory]\nk = -1\n", "byte 0xE9": b"[lm]\nmodel = "
             b"\"caf\xe9\"\n", "deeply nested": "x = " + "[" * 5000 + "]" * 5000 + "\n",
             "empty model": "[lm]\nmodel = \"\"\n", "huge integer": "[memory]\nk = " + "9" * 5000
             + "\n", "embedder without model": "[embedder]\nkind = \"litellm\"\n"}
    cases = [Case("config", name, _config(text), culprit="j.toml" if "embedder" not in name
                  else "embedder") for name, text in files.items()]
    envs = {"JUDGEALIGN_LM__TEMPERATURE=abc": {"JUDGEALIGN_LM__TEMPERATURE": "abc"},
            "JUDGEALIGN_MEMORY__K=-3": {"JUDGEALIGN_MEMORY__K": "-3"},
            "JUDGEALIGN_LM__NOPE=1": {"JUDGEALIGN_LM__NOPE": "1"}}
    for name, env in envs.items():
        cases.append(Case("config", f"env {name}", _config(env=env),
                          culprit=next(iter(env)).split("=")[0]))
    cases.append(Case("config", "missing --config file",
                      lambda d: (d / "a.txt").write_text("x") and ["score", "--rubric",
                                                                   "ml_notebook", "--config",
                                                                   "nope.toml", "a.txt"],
                      culprit="nope.toml"))
    return cases


def _notebook(data: object | bytes, name: str = "nb.ipynb") -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        (d / name).write_bytes(raw)
        return ["score", "--rubric", "ml_notebook", name]
    return setup


def notebook_cases() -> list[Case]:
    def nb(cells: object, **extra: object) -> dict:
        return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells, **extra}

    code = {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [],
            "execution_count": 1}
    variants = {
        "source numbers": nb([{**code, "source": [1, 2]}]),
        "outputs number": nb([{**code, "outputs": 5}]),
        "output data string": nb([{**code, "outputs": [{"output_type": "execute_result",
                                                        "data": "oops"}]}]),
        "stream text numbers": nb([{**code, "outputs": [{"output_type": "stream",
                                                         "name": "stdout", "text": [1, 2]}]}]),
        "cells not a list": nb({"a": 1}), "cell not an object": nb([1]),
        "no cells": {"nbformat": 4}, "a JSON list": [1, 2], "nbformat 3": {"nbformat": 3,
                                                                           "worksheets": []},
        "invalid JSON": b"{nope", "empty file": b"", "binary": bytes(range(256)) * 4,
        "byte 0xE9": b'{"cells": [], "x": "caf\xe9"}', "deeply nested":
            ("[" * 20000 + "]" * 20000).encode(),
    }
    cases = [Case("item file", name, _notebook(data), culprit="nb.ipynb")
             for name, data in variants.items()]
    cases.append(Case("item file", "missing file",
                      lambda d: ["score", "--rubric", "ml_notebook", "missing.ipynb"],
                      culprit="missing.ipynb"))
    cases.append(Case("item file", "a directory",
                      lambda d: (d / "dir.ipynb").mkdir() or ["score", "--rubric",
                                                               "ml_notebook", "dir.ipynb"],
                      culprit="dir.ipynb"))
    cases.append(Case("item file", "path over 255 characters",
                      lambda d: ["score", "--rubric", "ml_notebook", "n" * 300 + ".ipynb"],
                      culprit="nnnn"))
    cases.append(Case("item file", "an unknown cell type is judged as text",
                      _notebook(nb([{**code, "cell_type": "widget"}])), expect="ok"))
    cases.append(Case("item file", "UTF-8 BOM notebook is accepted",
                      _notebook(b"\xef\xbb\xbf" + json.dumps(nb([code])).encode()), expect="ok"))
    return cases


def flag_cases() -> list[Case]:
    def cv(*flags: str, make: Callable[[Path], None] | None = None
           ) -> Callable[[Path], list[str]]:
        def setup(d: Path) -> list[str]:
            (d / "tiny.toml").write_text(TINY)
            rows = [_row(item_id=f"a{i}", inputs={"answer": f"answer {i}"}, score=1 + i % 3)
                    for i in range(8)]
            (d / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            if make:
                make(d)
            return ["cv", "--rubric", "tiny.toml", "--labels", "labels.jsonl", *flags]
        return setup

    flags = {"--folds 0": ("--folds", "0"), "--folds 1": ("--folds", "1"),
             "--folds 100": ("--folds", "100"), "--folds x": ("--folds", "x"),
             "--bootstrap 0": ("--bootstrap", "0"), "--bootstrap -5": ("--bootstrap", "-5"),
             "--limit 0": ("--limit", "0"), "--limit 1": ("--limit", "1"),
             "--variants bogus": ("--variants", "bogus"), "--variants empty": ("--variants", ","),
             "--dimensions vibes": ("--dimensions", "vibes"), "--seed word": ("--seed", "x")}
    cases = [Case("flags", name, cv(*argv), culprit=argv[0].lstrip("-").split()[0])
             for name, argv in flags.items()]
    cases[-2].culprit = "vibes"
    cases.append(Case("flags", "--out names a file",
                      cv("--out", "report.txt", make=lambda d: (d / "report.txt").write_text("x")),
                      culprit="report.txt"))
    cases.append(Case("flags", "score --field without =",
                      lambda d: (d / "a.txt").write_text("x") and
                      ["score", "--rubric", "ml_notebook", "--field", "task", "a.txt"],
                      culprit="--field"))
    cases.append(Case("flags", "align --out a non-judge folder",
                      _labels([ROW]) if False else _align_into_folder(), culprit="precious"))
    cases.append(Case("flags", "unalign a missing judge",
                      lambda d: ["unalign", "--judge", "nojudge", "--items", "a"],
                      culprit="nojudge"))
    cases.append(Case("flags", "memory show a plain folder",
                      lambda d: (d / "plain").mkdir() or ["memory", "show", "plain"],
                      culprit="plain"))
    return cases


def _align_into_folder() -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        argv = _labels([ROW])(d)
        (d / "precious").mkdir()
        (d / "precious" / "thesis.txt").write_text("keep me")
        return argv[:-1] + ["precious"]
    return setup


# --- saved judges ------------------------------------------------------------------------------

def _rehash(path: Path) -> None:
    manifest = json.loads((path / "judge.json").read_text())
    manifest["files"] = {rel: hashlib.sha256((path / rel).read_bytes()).hexdigest()
                         if (path / rel).is_file() else digest
                         for rel, digest in manifest["files"].items()}
    data = (json.dumps(manifest, indent=1) + "\n").encode()
    (path / "judge.json").write_bytes(data)
    (path / "judge.json.sha256").write_text(hashlib.sha256(data).hexdigest())


def _state_edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(j: Path) -> None:
        state = json.loads((j / "program.json").read_text())
        (j / "program.json").write_text(json.dumps(change(state)))
        _rehash(j)
    return edit


def _dim(state: dict) -> dict:
    return state["dimensions"]["correctness"]


def judge_cases(template: Path) -> list[Case]:
    def edited(edit: Callable[[Path], None], command: str = "score") -> Callable[[Path], list]:
        def setup(d: Path) -> list[str]:
            shutil.copytree(template, d / "judge", symlinks=True)
            (d / "a.txt").write_text("an answer")
            edit(d / "judge")
            if command == "unalign":
                return ["unalign", "--judge", "judge", "--items", "a1"]
            if command == "memory":
                return ["memory", "show", "judge"]
            return ["score", "--judge", "judge", "a.txt"]
        return setup

    def outside(rel: str) -> Callable[[Path], None]:
        def edit(j: Path) -> None:
            target = j.parent / "outside"
            shutil.move(str(j / rel), str(target))
            os.symlink(target, j / rel)
        return edit

    edits: dict[str, Callable[[Path], None]] = {
        "judge.json truncated": lambda j: (j / "judge.json").write_text("{"),
        "judge.json edited": lambda j: (j / "judge.json").write_text(
            (j / "judge.json").read_text().replace("tiny", "tinz")),
        "checksum file deleted": lambda j: (j / "judge.json.sha256").unlink(),
        "program.json edited": lambda j: (j / "program.json").write_text("{}"),
        "program.json deleted": lambda j: (j / "program.json").unlink(),
        "episodes deleted": lambda j: (j / "memory/episodes.jsonl").unlink(),
        "state is a list": _state_edit(lambda s: []),
        "dimensions is a list": _state_edit(lambda s: {**s, "dimensions": [1]}),
        "k is a word": _state_edit(lambda s: (_dim(s).update(k="abc"), s)[1]),
        "k is huge": _state_edit(lambda s: (_dim(s).update(k=10**9), s)[1]),
        "guideline not an object": _state_edit(lambda s: (_dim(s).update(guidelines=[1]), s)[1]),
        "seen is a list": _state_edit(lambda s: {**s, "seen": [1]}),
        "episodic memory switched off": _state_edit(lambda s: {**s, "episodic": None}),
        "embedder names a remote model": _state_edit(lambda s: {**s, "episodic": {
            **s["episodic"], "embedder": {"kind": "litellm", "model": "openai/emb"}}}),
        "embedder dim absurd": _state_edit(lambda s: {**s, "episodic": {
            **s["episodic"], "embedder": {"kind": "hashing", "dim": -5}}}),
        "format from the future": _state_edit(lambda s: {**s, "format": 99}),
        "unknown key": _state_edit(lambda s: {**s, "surprise": True}),
        "rubric swapped": _state_edit(lambda s: {**s, "rubric": {"name": "x"}}),
        "manifest path traversal": lambda j: (
            (lambda m: ((j / "judge.json").write_text(json.dumps(
                {**m, "files": {**m["files"], "../../etc/hostname": "0" * 64}})), _rehash(j)))(
                json.loads((j / "judge.json").read_text()))),
        "manifest format 99": lambda j: (
            (lambda m: ((j / "judge.json").write_text(json.dumps(
                {**m, "format_version": 99})), _rehash(j)))(
                json.loads((j / "judge.json").read_text()))),
        "episode line malformed": lambda j: (
            (j / "memory/episodes.jsonl").write_text(
                (j / "memory/episodes.jsonl").read_text() + '{"item_id": 5}\n'), _rehash(j)),
        "episode line not JSON": lambda j: (
            (j / "memory/episodes.jsonl").write_text(
                (j / "memory/episodes.jsonl").read_text() + "{nope\n"), _rehash(j)),
        "episode of an unknown dimension": lambda j: (
            (j / "memory/episodes.jsonl").write_text(
                (j / "memory/episodes.jsonl").read_text() + json.dumps(
                    {"item_id": "z", "dimension": "vibes", "inputs": {"answer": "x"},
                     "score": 1, "rationale": ""}) + "\n"), _rehash(j)),
        "chroma is a link outside": outside("memory/chroma"),
        "episodes is a link outside": outside("memory/episodes.jsonl"),
        "program.json is a link outside": outside("program.json"),
        "judge folder is a link": None,
    }
    cases = []
    for name, edit in edits.items():
        if edit is None:
            def link(d: Path) -> list[str]:
                shutil.copytree(template, d / "real", symlinks=True)
                os.symlink(d / "real", d / "judge")
                (d / "a.txt").write_text("x")
                return ["score", "--judge", "judge", "a.txt"]
            cases.append(Case("saved judge", name, link, culprit="judge"))
            continue
        for command in ("score", "unalign", "memory") if name in (
                "judge.json edited", "k is a word", "chroma is a link outside",
                "episodic memory switched off") else ("score",):
            cases.append(Case("saved judge", f"{name} ({command})", edited(edit, command),
                              culprit="judge"))
    return cases


# --- the run -----------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def run_case(case: Case, work: Path, lm_flags: list[str]) -> str:
    from judgealign.cli import main

    folder = Path(tempfile.mkdtemp(dir=work))
    saved_env = dict(os.environ)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        argv = case.setup(folder)
        if argv and argv[0] in ("score", "align", "cv") and "--lm" not in argv \
                and case.kind != "config":  # a flag would override the config under test
            argv = [*argv, *lm_flags]
        before = snapshot(folder)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse inside main exits only for --help
                code = exc.code if isinstance(exc.code, int) else 2
            except BaseException as exc:  # noqa: BLE001 - a traceback escaping main
                return f"traceback ({type(exc).__name__})"
        text = err.getvalue()
        after = snapshot(folder)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    if "Traceback" in text or "internal error" in text:
        return "traceback"
    judge_files = {k for k in before if k.startswith(("judge/", "outside", "real/"))}
    if any(before[k] != after.get(k) for k in judge_files):
        return "wrote to a saved judge"
    if case.expect == "ok":
        return "ok" if code == 0 else f"refused valid input (exit {code}): {text.strip()[:120]}"
    if code == 0:
        return "accepted silently"
    if code != 2:
        return f"exit {code}: {text.strip()[:120]}"
    culprit = case.culprit
    if culprit and culprit not in text:
        return f"culprit not named: {text.strip()[:120]}"
    return "ok"


def build_template(work: Path, lm_flags: list[str]) -> Path:
    from judgealign.cli import main

    folder = work / "template"
    folder.mkdir()
    (folder / "tiny.toml").write_text(TINY)
    rows = [_row(item_id=f"a{i}", inputs={"answer": f"answer {i}"}, score=1 + i % 3,
                 rationale=f"the answer {i} is {'wrong' if i % 3 == 0 else 'fine'}")
            for i in range(6)]
    (folder / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(["align", "--rubric", "tiny.toml", "--labels", "labels.jsonl",
                         "--out", "judge", *lm_flags])
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit("could not build the template judge")
    return folder / "judge"


def run() -> dict:
    import dspy

    from judgealign.testing import FakeOpenAIServer

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    work = Path(tempfile.mkdtemp(prefix="judgealign-bad-"))
    os.environ["JUDGEALIGN_CACHE_DIR"] = str(work / ".cache")
    os.environ.setdefault("OPENAI_API_KEY", "fake-key")
    results = []
    with FakeOpenAIServer(lambda p: {"score": "2", "rationale": "fake", "guidelines": []}) as srv:
        lm_flags = ["--lm", "openai/fake", "--api-base", srv.api_base]
        template = build_template(work, lm_flags)
        cases = (label_cases() + rubric_cases() + config_cases() + notebook_cases()
                 + flag_cases() + judge_cases(template))
        for case in cases:
            outcome = run_case(case, work, lm_flags)
            results.append((case, outcome))
            mark = "." if outcome == "ok" else "F"
            print(mark, end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return {"results": results}


def render(result: dict, argv: Sequence[str], seconds: float) -> str:
    results = result["results"]
    kinds = Counter(c.kind for c, _ in results)
    bad = [(c, o) for c, o in results if o != "ok"]
    classes = Counter(o.split(":")[0].split(" (")[0] for _, o in bad)
    rows = [(kind, n, sum(1 for c, o in results if c.kind == kind and o == "ok"),
             sum(1 for c, o in results if c.kind == kind and o.startswith("traceback")),
             sum(1 for c, o in results if c.kind == kind and o == "accepted silently"),
             sum(1 for c, o in results if c.kind == kind and o == "wrote to a saved judge"))
            for kind, n in kinds.items()]
    out = ["## Bad-input campaign", "",
           f"Command: `{command_line('benchmarks.bad_inputs', argv)}` ({seconds:.0f} s). Each "
           "case runs `judgealign.cli.main` in a fresh folder; expected: exit 2 with one line "
           "naming the file, row or field, no traceback, no write inside a saved judge or a "
           "folder a link points to; inputs the README accepts (UTF-8 BOM) must exit 0.", "",
           table(["kind", "cases", "as promised", "tracebacks", "accepted silently",
                  "wrote to a saved judge"], rows), "",
           f"**{len(results) - len(bad)} of {len(results)}** cases ended as promised."]
    if bad:
        out += ["", "Not as promised: " + ", ".join(f"{k} {v}" for k, v in classes.items()), ""]
        out += [f"- {c.kind} / {c.name}: {o}" for c, o in bad]
    out += ["", machine_markdown(machine_info())]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    result = run()
    text = render(result, argv, time.perf_counter() - started)
    emit(SECTION, text, write=not args.no_write)
    return text


if __name__ == "__main__":
    main()
