"""``judgealign`` command line: a thin shell over the library.

Heavy libraries are imported inside the commands, so ``judgealign --help`` stays fast. Every
error judgealign raises on purpose is printed as one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


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

    for name, help_text in (("cv", "cross-validate alignment (K folds, bootstrap CIs)"),
                            ("demo", "the main job: cross-validated alignment of the bundled "
                                     "notebook judge on the embedded LM")):
        p = sub.add_parser(name, help=help_text)
        if name == "cv":
            p.add_argument("--rubric", required=True, help="built-in rubric name or file")
            p.add_argument("--labels", required=True, help="labels (.jsonl or .csv)")
        p.add_argument("--folds", type=int, default=4)
        p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
        p.add_argument("--variants", default=None,
                       help="comma-separated: baseline, memalign, semantic-only, "
                            "episodic-only, labeled-fewshot, knn-fewshot, bootstrap-fewshot "
                            "(default: baseline,memalign; demo: baseline,episodic-only)")
        p.add_argument("--dimensions", help="comma-separated dimension ids (default: all)")
        p.add_argument("--limit", type=int, help="use only the first N items")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default="reports/" + name, help="report directory")
        p.add_argument("--resume", action="store_true", help="reuse finished folds in --out")
        if name == "demo":
            p.add_argument("--full", action="store_true",
                           help="all 9 dimensions and all items (hours on 2 cores)")
        _add_config(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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

    from judgealign.errors import ItemError
    from judgealign.items import read_item_file
    from judgealign.lm import build_lm

    settings = _settings(args)
    if args.judge:
        from judgealign.artifacts import load

        judge = load(args.judge, lm=args.lm, config=settings)
    else:
        from judgealign.program import RubricJudge
        from judgealign.signatures.rubric import resolve_rubric

        judge = RubricJudge.from_settings(resolve_rubric(args.rubric), settings)
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
    with dspy.context(lm=judge.get_lm() or build_lm(settings.lm)):
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
    return 0


def _one_line(text: str | None, width: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cmd_align(args: argparse.Namespace) -> int:
    import dspy

    from judgealign import align
    from judgealign.artifacts import load, save
    from judgealign.optimizers.memalign import align_report_table

    settings = _settings(args)
    settings.memory.semantic = settings.memory.semantic and not args.no_semantic
    settings.memory.episodic = settings.memory.episodic and not args.no_episodic
    if args.judge:
        program = load(args.judge, lm=args.lm, config=settings)
    else:
        from judgealign.program import RubricJudge
        from judgealign.signatures.rubric import resolve_rubric

        program = RubricJudge.from_settings(resolve_rubric(args.rubric), settings)
    with dspy.context(lm=program.get_lm()):
        judge = align(program, args.labels, config=settings)
    save(judge, args.out, config=settings)
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
            print(f"  + {g['text']}\n      sources: {', '.join(g['sources'])}")
        for g in info["rejected"]:
            print(f"  - [{g['reason']}] {g['text']}")
    return 0


def _cmd_unalign(args: argparse.Namespace) -> int:
    from judgealign.artifacts import load, save

    judge = load(args.judge, lm=None, verify_lm=False)
    known = judge.memory.item_ids() if judge.memory is not None else set()
    unknown = sorted(set(args.items) - known - {s for j in judge.judges.values()
                                               for g in j.guidelines for s in g.sources})
    if unknown:
        print(f"judgealign: warning: not in this judge's memory: {', '.join(unknown)}",
              file=sys.stderr)
    new = judge.unalign(args.items)
    out = args.out or args.judge
    save(new, out)
    before = sum(len(j.guidelines) for j in judge.judges.values())
    after = sum(len(j.guidelines) for j in new.judges.values())
    print(f"forgot {len(set(args.items)) - len(unknown)} item(s): episodes "
          f"{len(judge.memory or [])} -> {len(new.memory or [])}, guidelines {before} -> "
          f"{after}; saved to {out}")
    return 0


def _cmd_cv(args: argparse.Namespace) -> int:
    from judgealign.evaluation.runner import run_cv_command

    return run_cv_command(args, settings=_settings(args))


_COMMANDS = {"score": _cmd_score, "align": _cmd_align, "memory": _cmd_memory,
             "unalign": _cmd_unalign, "cv": _cmd_cv, "demo": _cmd_cv}

if __name__ == "__main__":
    raise SystemExit(main())
