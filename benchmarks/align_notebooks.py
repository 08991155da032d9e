"""Cost and outcome of aligning the nine-dimension notebook judge with the embedded model.

Run from the repository root::

    python -m benchmarks.align_notebooks            # 40 labelled notebooks (about 15 min)
    python -m benchmarks.align_notebooks --quick    # 12 notebooks (under 10 min)

MemAlign compiles ``RubricJudge(ml_notebook.RUBRIC)`` on the first N notebooks of the bundled
set with the embedded SmolLM2-135M as judge and reflection LM, both memories on, the embedded
model's answer cache off (every call is paid for). It reports, per dimension, the reflection
calls, tokens and seconds, how many guidelines the reflection LM proposed and how many the
grounding filter kept or rejected (with the reasons), and quotes guidelines verbatim. The
compiled judge is saved (``--out``) so ``judgealign memory show`` can list the same guidelines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import (  # noqa: E402
    command_line,
    emit,
    machine_info,
    machine_markdown,
    table,
)

SECTION = "align_notebooks"
FULL = {"items": 40}
QUICK = {"items": 12}
BATCH_EXAMPLES = 20
DEMO_INPUT_TOKENS = 150
QUOTED = 3


def _quote(text: str, limit: int = 300) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + " …"


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "–"


def run(items: int, out: Path) -> dict:
    import dspy

    from judgealign.config import LMSettings
    from judgealign.datasets import load_ml_notebooks
    from judgealign.lm import build_lm
    from judgealign.optimizers.memalign import MemAlign
    from judgealign.program import RubricJudge
    from judgealign.signatures import ml_notebook

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    data = load_ml_notebooks()
    labels = data.labels.subset(data.labels.item_ids[:items])
    lm = build_lm(LMSettings(model="local", cache=False))
    optimizer = MemAlign(reflection_lm=lm, batch_examples=BATCH_EXAMPLES,
                         demo_input_tokens=DEMO_INPUT_TOKENS, progress=True)
    start = time.perf_counter()
    judge = optimizer.compile(RubricJudge(ml_notebook.RUBRIC, lm=lm), trainset=labels)
    wall = time.perf_counter() - start
    judge.save(out / "judge")
    kept = [(dim, g) for dim, j in judge.judges.items() for g in j.guidelines]
    rejected = [(dim, g) for dim, j in judge.judges.items() for g in j.rejected]
    return {"items": items, "labels": len(labels), "wall": wall, "machine": machine_info(),
            "report": judge.report.to_dict(), "kept": kept, "rejected": rejected,
            "lm": lm.model, "out": out, "reflection": optimizer.reflection,
            "validate": optimizer.validate, "validation_budget": optimizer.validation_budget}


def render(result: dict, argv: Sequence[str], quick: bool) -> str:
    rep = result["report"]
    rows, reasons_total = [], Counter()
    modes_total: Counter = Counter()
    for d in rep["dimensions"]:
        reasons = Counter(d["rejected"])
        reasons_total.update(reasons)
        modes_total.update(d.get("kept_by_mode") or {})
        rows.append([d["dimension"], d["examples"], " → ".join(d.get("modes") or []) or "–",
                     d.get("reflection_calls", 0), d.get("validation_calls", 0), d["lm_calls"],
                     f"{d['prompt_tokens']:,}", f"{d['completion_tokens']:,}",
                     f"{d['seconds']:.0f}", d["proposed"], d["kept"],
                     _counts(d.get("kept_by_mode") or {}), _counts(reasons),
                     d["episodes_total"]])
    rows.append(["**total**", sum(d["examples"] for d in rep["dimensions"]), "",
                 sum(d.get("reflection_calls", 0) for d in rep["dimensions"]),
                 sum(d.get("validation_calls", 0) for d in rep["dimensions"]), rep["lm_calls"],
                 f"{rep['prompt_tokens']:,}", f"{rep['completion_tokens']:,}",
                 f"{rep['seconds']:.0f}", sum(d["proposed"] for d in rep["dimensions"]),
                 sum(d["kept"] for d in rep["dimensions"]), _counts(modes_total),
                 _counts(reasons_total), sum(d["episodes_total"] for d in rep["dimensions"])])
    header = ["dimension", "examples", "reflection modes (in order)", "reflection calls",
              "validation calls", "LM calls", "prompt tokens", "completion tokens", "seconds",
              "proposed", "kept", "kept by mode", "rejected by reason", "episodes stored"]
    with_kept = sum(1 for d in rep["dimensions"] if d["kept"] > 0)

    def quoted(pairs: list, per_dimension: int) -> str:
        # Up to `per_dimension` distinct texts of each dimension, in run order.
        picked, seen = [], Counter()
        texts = set()
        for dim, g in pairs:
            if seen[dim] < per_dimension and (dim, g.text) not in texts:
                picked.append((dim, g))
                seen[dim] += 1
                texts.add((dim, g.text))
        return table(["dimension", "guideline (verbatim)", "mode", "experts scored",
                      "grounding", "validation MAE without → with", "reason", "sources"],
                     [[dim, _quote(g.text), g.mode, g.scores or "–",
                       "–" if g.grounding is None else f"{g.grounding:.2f}",
                       "–" if g.validation is None else
                       f"{g.validation[0]:.2f} → {g.validation[1]:.2f}",
                       g.reason or "kept", ", ".join(g.sources)] for dim, g in picked])

    mode = "quick" if quick else "full"
    return "\n\n".join([
        f"## Aligning the nine-dimension notebook judge with the embedded model ({mode} mode)",
        f"Command: `{command_line('benchmarks.align_notebooks', argv)}` — "
        f"{result['items']} notebooks ({result['labels']} labels), MemAlign with both memories, "
        f"reflection batches of ≤ {BATCH_EXAMPLES} examples, demo inputs cut to "
        f"{DEMO_INPUT_TOKENS} tokens; judge and reflection LM `{result['lm']}`; the engine's "
        "answer cache and DSPy's cache off, so every call is paid for. `compile` took "
        f"**{result['wall']:.0f} s** wall in all; its report counts "
        f"**{rep['lm_calls']} LM calls, {rep['prompt_tokens']:,} prompt and "
        f"{rep['completion_tokens']:,} completion tokens** (reflection and validation; "
        f"{rep['seconds'] / 60:.0f} min). Reflection mode `{result['reflection']}`, held-out "
        f"validation {'on' if result['validate'] else 'off'} (budget "
        f"{result['validation_budget']} judge calls per dimension). Episodic memory costs no "
        "LM call (embedding + Chroma upsert).",
        table(header, rows),
        f"**{with_kept} of {len(rep['dimensions'])} dimensions kept at least one guideline.** "
        f"Kept guidelines ({len(result['kept'])} in all; up to {QUOTED} distinct texts per "
        "dimension quoted with the mode that made them and their sources; `judgealign memory "
        "show` on the saved judge lists every one):",
        quoted(result["kept"], QUOTED) if result["kept"] else "_none kept_",
        f"Rejected guidelines ({len(result['rejected'])} in all; up to 1 per dimension quoted; "
        "all of them are in the saved judge's memory file):",
        quoted(result["rejected"], 1) if result["rejected"] else "_none rejected_",
        machine_markdown(result["machine"], lm=result["lm"] + " (llama-cpp-python, in-process)"),
    ])


def _loaded(saved: dict) -> dict:
    """A saved run (guidelines.json) in the shape :func:`render` takes."""
    from judgealign.memory.semantic import Guideline

    def guidelines(rows: list) -> list:
        return [(r["dimension"], Guideline(
            r["text"], r["dimension"], tuple(r["sources"]), grounding=r["grounding"],
            reason=r.get("reason"), mode=r.get("mode", "cited"), scores=r.get("scores"),
            validation=tuple(r["validation"]) if r.get("validation") else None))
            for r in rows]

    return {**saved, "kept": guidelines(saved["kept"]), "rejected": guidelines(saved["rejected"])}


def _guideline_row(dim: str, g: Any) -> dict:
    return {"dimension": dim, "text": g.text, "sources": list(g.sources),
            "grounding": g.grounding, "reason": g.reason, "mode": g.mode, "scores": g.scores,
            "validation": list(g.validation) if g.validation else None}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['items']} notebooks")
    parser.add_argument("--items", type=int, help="notebooks to align on (default: the mode's)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-out/align_notebooks"),
                        help="where the compiled judge (judge/) and guidelines.json go")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--render", type=Path, metavar="GUIDELINES_JSON",
                        help="re-render the section from a run's guidelines.json (no LM calls)")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("ignore")
    if args.render:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        emit(SECTION, render(_loaded(saved), saved["argv"], saved["quick"]),
             write=not args.no_write)
        return
    items = args.items or (QUICK if args.quick else FULL)["items"]
    result = run(items, args.out)
    dump = {"argv": argv, "quick": args.quick, "items": items, "labels": result["labels"],
            "wall": result["wall"], "lm": result["lm"], "machine": result["machine"],
            "report": result["report"], "reflection": result["reflection"],
            "validate": result["validate"], "validation_budget": result["validation_budget"],
            "kept": [_guideline_row(d, g) for d, g in result["kept"]],
            "rejected": [_guideline_row(d, g) for d, g in result["rejected"]]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "guidelines.json").write_text(json.dumps(dump, indent=2), encoding="utf-8")
    emit(SECTION, render(result, argv, args.quick), write=not args.no_write)


if __name__ == "__main__":
    main()
