"""``judgealign`` command line: a thin shell over the library.

Heavy libraries are imported inside the commands, so ``judgealign --help`` stays fast. Every
error judgealign raises on purpose is printed as one line and exits with code 2.

Exit codes: 0 success; 1 some judgments failed (``score``), a file system error, or a bug
(an unexpected exception: one line with a hint, the traceback only with ``JUDGEALIGN_DEBUG=1``);
2 bad input (a flag, file, label, rubric or config) -- flags are checked before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from judgealign.variant_names import VARIANT_NAMES

EXIT_FAILED = 1
EXIT_USAGE = 2


# --- flag checks (argparse types: a bad value stops before any work, exit 2) -----------------

def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""

    def check(text: str) -> int:
        try:
            value = int(text.strip()) if len(text) <= 30 else None
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"from {low} to {high:,}"
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text[:40]!r}")
        return value

    return check


def _variant_list(text: str) -> str:
    """An argparse type: comma-separated names from ``VARIANT_NAMES`` (returned normalised)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("names no variant; known: " + ", ".join(VARIANT_NAMES))
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown)}; known: "
                                         + ", ".join(VARIANT_NAMES))
    return ",".join(names)


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks that involve several flags or the file system, before any work starts."""
    folds, limit = getattr(args, "folds", None), getattr(args, "limit", None)
    if folds is not None and limit is not None and limit < folds:
        parser.error(f"--limit {limit} leaves fewer items than --folds {folds}")
    out = getattr(args, "out", None)
    if out is not None:
        from judgealign.errors import JudgeAlignError
        from judgealign.textfiles import checked_path

        try:
            path = checked_path(out, error=JudgeAlignError, what="--out")
        except JudgeAlignError as exc:
            parser.error(str(exc))
        # The first part of --out that exists must be a folder: a file there fails only when
        # the report or judge is written, after all the work.
        for part in (path, *path.parents):
            if part.exists() or part.is_symlink():
                if not part.is_dir():
                    parser.error(f"--out {out}: {part} is a file, not a folder")
                break


def _add_config(p: argparse.ArgumentParser, *, lm: bool = True) -> None:
    p.add_argument("--config", help="a judgealign.toml (default: ./judgealign.toml if present)")
    if lm:
        p.add_argument("--lm", help="judge LM: 'local', 'local:/path.gguf' or a litellm model "
                                    "string such as openai/gpt-4.1-mini")
        p.add_argument("--api-base", help="base URL of an OpenAI-compatible server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="judgealign",
        description="Align LLM judges with human experts (MemAlign), prove it with "
                    "cross-validation, save and serve the aligned judge.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("score", help="judge items (notebooks, scripts, text files)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rubric", help="built-in rubric name or a .toml/.yaml rubric file")
    src.add_argument("--judge", help="a saved judge directory")
    p.add_argument("files", nargs="+", help="items to judge; each fills the rubric's main input")
    p.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                   help="another input field for every item (VALUE or @file)")
    p.add_argument("--dimensions", help="comma-separated dimension ids (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    _add_config(p)

    p = sub.add_parser("align", help="align a judge with expert labels and save it")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rubric", help="built-in rubric name or a rubric file")
    src.add_argument("--judge", help="a saved judge to align further (incremental)")
    p.add_argument("--labels", required=True, help="labels (.jsonl or .csv)")
    p.add_argument("--out", required=True, help="directory to save the aligned judge to")
    p.add_argument("--no-semantic", action="store_true", help="skip guideline distillation")
    p.add_argument("--no-episodic", action="store_true", help="skip the example memory")
    _add_config(p)

    p = sub.add_parser("memory", help="inspect a saved judge's memories")
    msub = p.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
    m = msub.add_parser("show", help="guidelines (kept and rejected) with sources; episodes")
    m.add_argument("judge", help="a saved judge directory")
    m.add_argument("--json", action="store_true")

    p = sub.add_parser("unalign", help="forget items' feedback in a saved judge")
    p.add_argument("--judge", required=True, help="a saved judge directory")
    p.add_argument("--items", nargs="+", required=True, help="item ids to forget")
    p.add_argument("--out", help="save here instead of replacing the judge")

    # --- evaluate (issue 16) ---
    p = sub.add_parser("evaluate", help="score a saved judge on labelled items, no alignment: "
                                        "MAE (failures charged), kappa, confusion, disagreements")
    p.add_argument("--judge", required=True, help="a saved judge directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", help="labels (.jsonl or .csv)")
    src.add_argument("--traces", metavar="EXPERIMENT",
                     help="use the human assessments of this MLflow experiment's traces "
                          "(name or id, on [tracking] uri or --tracking-uri)")
    p.add_argument("--train", help="training labels (.jsonl or .csv): adds the reference "
                                   "predictors constant and neighbours")
    p.add_argument("--dimensions", help="comma-separated dimension ids (default: all labelled)")
    p.add_argument("--bootstrap", type=_int_at_least(1, 1_000_000), default=10_000,
                   help="bootstrap resamples against the references (default 10,000)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--out", help="write evaluation.json and evaluation.md into this folder")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: [tracking] uri)")
    _add_config(p)
    # --- end evaluate ---

    for name, help_text in (("cv", "cross-validate alignment (K folds, bootstrap CIs)"),
                            ("demo", "the main job: cross-validated alignment of the bundled "
                                     "notebook judge on the embedded LM")):
        p = sub.add_parser(name, help=help_text)
        if name == "cv":
            p.add_argument("--rubric", required=True, help="built-in rubric name or file")
            p.add_argument("--labels", required=True, help="labels (.jsonl or .csv)")
        p.add_argument("--folds", type=_int_at_least(2), default=4,
                       help="K, at least 2 and at most the number of items (default 4)")
        p.add_argument("--bootstrap", type=_int_at_least(1, 1_000_000), default=10_000,
                       help="bootstrap resamples, 1 to 1,000,000 (default 10,000)")
        p.add_argument("--variants", type=_variant_list, default=None,
                       help=f"comma-separated: {', '.join(VARIANT_NAMES)} "
                            "(default: baseline,memalign, for the demo too)")
        p.add_argument("--dimensions", help="comma-separated dimension ids (default: all)")
        p.add_argument("--limit", type=_int_at_least(2),
                       help="use only the first N items (N >= 2 and >= --folds)")
        p.add_argument("--seed", type=_int_at_least(0), default=0)
        p.add_argument("--group-by", metavar="FIELD", default=None,
                       help="an input field of the rubric (e.g. question): items with the "
                            "same value of it share a fold; or id:REGEX: items whose ids "
                            "match it alike (first capture group) do (default: only items "
                            "with identical inputs do)")
        p.add_argument("--out", default="reports/" + name, help="report directory")
        p.add_argument("--resume", action="store_true", help="reuse finished folds in --out")
        p.add_argument("--no-references", action="store_true",
                       help="leave out the reference predictors (training median, neighbours)")
        if name == "demo":
            p.add_argument("--full", action="store_true",
                           help="all 9 dimensions and all items, whole (see README for the "
                                "measured time)")
        _add_config(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_args(parser, args)
    except SystemExit as exc:  # argparse printed usage and the error (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.version:
        from judgealign import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from judgealign.errors import JudgeAlignError

    try:
        return int(_COMMANDS[args.command](args) or 0)
    except JudgeAlignError as exc:
        print(f"judgealign: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("judgealign: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: no traceback for users, one line and a hint
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    """Report an exception judgealign did not raise on purpose; exit code 1."""
    if os.environ.get("JUDGEALIGN_DEBUG") == "1":
        import traceback

        traceback.print_exception(exc)
    message = " ".join(str(exc).split())[:300]
    if isinstance(exc, OSError) and exc.filename:
        # Permission denied, disk full, ...: the machine said no; not a bug of judgealign.
        print(f"judgealign: error: {exc.strerror or message}: {exc.filename}", file=sys.stderr)
        return EXIT_FAILED
    print(f"judgealign: internal error: {type(exc).__name__}: {message} -- this is a bug, "
          "please report it (run with JUDGEALIGN_DEBUG=1 for the traceback)", file=sys.stderr)
    return EXIT_FAILED


# --- commands --------------------------------------------------------------------------------

def _settings(args: argparse.Namespace) -> Any:
    from judgealign.config import load_config

    lm: dict[str, Any] = {}
    if getattr(args, "lm", None):
        lm["model"] = args.lm
    if getattr(args, "api_base", None):
        lm["api_base"] = args.api_base
    return load_config(args.config, overrides={"lm": lm} if lm else None)


def _cmd_score(args: argparse.Namespace) -> int:
    import dspy

    from judgealign import build
    from judgealign.errors import ItemError
    from judgealign.items import read_item_file

    settings = _settings(args)
    # Everything the user gave is read and checked before an LM is built.
    if args.judge:
        judge = build.load_judge(args.judge, config=settings, attach_lm=False)
    else:
        judge = build.program(args.rubric, settings)
    rubric = judge.rubric
    dims = [rubric.dimension(d).id for d in args.dimensions.split(",")] if args.dimensions \
        else rubric.dimension_ids
    main_input = next((i.name for i in rubric.inputs if i.required), rubric.input_names[0])
    extra = {}
    for spec in args.field:
        name, sep, value = spec.partition("=")
        if not sep or name not in rubric.input_names:
            raise ItemError(f"--field {spec!r}: expected NAME=VALUE with NAME one of "
                            f"{rubric.input_names}")
        extra[name] = read_item_file(value[1:]) if value.startswith("@") else value
    items = [{main_input: read_item_file(f), **extra} for f in args.files]
    judge.set_lm(build.judge_lm(settings))
    with dspy.context(lm=judge.get_lm()):
        results = judge.batch(items, item_ids=[Path(f).name for f in args.files],
                              dimensions=dims, progress=sys.stderr.isatty())
    for res in results:
        if args.json:
            print(json.dumps(res.to_dict(), ensure_ascii=False))
            continue
        print(f"\n{res.item_id}")
        for dim in dims:
            r = res[dim]
            name = rubric.dimension(dim).name
            why = r.error if r.failed else r.rationale
            print(f"  {name:<28} {r.label:>6}  {_one_line(why)}")
    failed = sum(1 for res in results for dim in dims if res[dim].failed)
    if failed:  # exit 1, not 0: a script must not take failed judgments for scores
        print(f"judgealign: {failed} of {len(results) * len(dims)} judgments failed",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


def _one_line(text: str | None, width: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cmd_align(args: argparse.Namespace) -> int:
    import dspy

    from judgealign import build
    from judgealign.api import align
    from judgealign.optimizers.memalign import align_report_table

    settings = _settings(args)
    settings.memory.semantic = settings.memory.semantic and not args.no_semantic
    settings.memory.episodic = settings.memory.episodic and not args.no_episodic
    if args.judge:
        program = build.load_judge(args.judge, config=settings)
    else:
        program = build.program(args.rubric, settings, lm=build.judge_lm(settings))
    with dspy.context(lm=program.get_lm()):
        judge = align(program, args.labels, config=settings, progress=sys.stderr.isatty())
    judge.save(args.out, config=settings)
    print(align_report_table(judge.report))
    print(f"\nsaved the aligned judge to {args.out} "
          f"({judge.report.lm_calls} reflection calls, {judge.report.seconds:.1f} s)")
    return 0


def _cmd_memory(args: argparse.Namespace) -> int:
    from judgealign.artifacts import read_memory

    memory = read_memory(args.judge)
    if args.json:
        print(json.dumps(memory, indent=2, ensure_ascii=False))
        return 0
    for dim, info in memory["dimensions"].items():
        print(f"\n{dim}: {info['episodes']} episodes, {len(info['kept'])} guidelines kept, "
              f"{len(info['rejected'])} rejected")
        for g in info["kept"]:
            scores = f" [experts scored {g['scores']}]" if g.get("scores") else ""
            print(f"  + {g['text']}{scores}\n      mode: {g.get('mode', 'cited')}, "
                  f"sources: {', '.join(g['sources'])}")
        for g in info["rejected"]:
            print(f"  - [{g['reason']}] {g['text']}\n      mode: {g.get('mode', 'cited')}, "
                  f"sources: {', '.join(g['sources']) or '(none)'}")
    return 0


def _cmd_unalign(args: argparse.Namespace) -> int:
    from judgealign import build

    judge = build.load_judge(args.judge, attach_lm=False)
    known = judge.memory.item_ids() if judge.memory is not None else set()
    unknown = sorted(set(args.items) - known - {s for j in judge.judges.values()
                                               for g in j.guidelines for s in g.sources})
    if unknown:
        print(f"judgealign: warning: not in this judge's memory: {', '.join(unknown)}",
              file=sys.stderr)
    new = judge.unalign(args.items)
    out = args.out or args.judge
    new.save(out, config=_saved_settings(args.judge))
    before = sum(len(j.guidelines) for j in judge.judges.values())
    after = sum(len(j.guidelines) for j in new.judges.values())
    print(f"forgot {len(set(args.items)) - len(unknown)} item(s): episodes "
          f"{len(judge.memory or [])} -> {len(new.memory or [])}, guidelines {before} -> "
          f"{after}; saved to {out}")
    return 0


def _saved_settings(judge_dir: str) -> Any:
    """The settings a saved judge recorded (no secrets), to record again when re-saving it."""
    from judgealign.artifacts import read_manifest
    from judgealign.config import Settings

    recorded = read_manifest(judge_dir).get("settings")
    try:
        return Settings.model_validate(recorded) if recorded else None
    except Exception:  # settings of another version: re-save without them
        return None


# --- evaluate (issue 16) ---
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from judgealign import build
    from judgealign.evaluation.evaluate import evaluate

    settings = _settings(args)
    if args.tracking_uri:
        settings.tracking.uri = args.tracking_uri
    judge = build.load_judge(args.judge, config=settings)
    dims = [d.strip() for d in args.dimensions.split(",") if d.strip()] \
        if args.dimensions else None
    result = evaluate(judge, args.labels, traces=args.traces, train=args.train,
                      config=settings, dimensions=dims, bootstrap=args.bootstrap,
                      seed=args.seed, progress=sys.stderr.isatty())
    print(result.table())
    if args.out:
        paths = result.write(args.out)
        print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
# --- end evaluate ---


def _cmd_cv(args: argparse.Namespace) -> int:
    from judgealign.evaluation.runner import run_cv_command

    return run_cv_command(args, settings=_settings(args))


_COMMANDS = {"score": _cmd_score, "align": _cmd_align, "memory": _cmd_memory,
             "unalign": _cmd_unalign, "cv": _cmd_cv, "demo": _cmd_cv,
             "evaluate": _cmd_evaluate}

if __name__ == "__main__":
    raise SystemExit(main())
