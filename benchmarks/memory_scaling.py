"""Held-out MAE of the aligned judge as the number of feedback examples grows.

Run from the repository root::

    python -m benchmarks.memory_scaling --quick   # 1 dimension, 5 held-out, episodic only
    python -m benchmarks.memory_scaling           # 3 dimensions, the whole held-out fold

Fold 0 of ``assign_folds(k=4, seed=0)`` on the bundled notebook labels is held out. The other
folds' notebooks, shuffled once with a fixed seed, are the feedback pool; MemAlign (both
memories) aligns a fresh judge on the first n of them for n in ``SIZES`` (nested sets, so a
larger n only adds feedback), with the embedded SmolLM2-135M as judge and reflection LM. Each
aligned judge scores the same held-out notebooks. n = 0 is the unaligned judge. The 95% CIs
come from a paired bootstrap over held-out items (10,000 resamples): one of the MAE at n, one
of its change against n = 0. Writes a table to BENCHMARKS.md and ``memory_scaling.png``.

``--episodic-only`` skips the reflection calls. With the embedded 135M model it changes no
judgment as long as no guideline survives the grounding filter (``benchmarks.align_notebooks``:
0 of 42 proposals kept on 40 notebooks), and it saves minutes per size.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import ROOT, command_line, emit, machine_markdown, table  # noqa: E402
from benchmarks._split import FOLD_SEED, FOLDS, HELD_OUT_FOLD, fold_split  # noqa: E402

SECTION = "memory_scaling"
SIZES = (0, 2, 5, 10, 20, 40)
POOL_SEED = 0
K, DEMO_INPUT_TOKENS, ITEM_TOKENS = 3, 150, 600
N_RESAMPLES = 10_000
QUICK = {"dims": ("model_training",), "test": 5, "semantic": False}  # about 8 min on 2 cores
FULL = {"dims": ("model_training", "data_imputation", "metrics_evaluation"), "test": None,
        "semantic": True}
FIGURE = ROOT / "benchmarks" / "memory_scaling.png"


def run(dims: Sequence[str], test: int | None, sizes: Sequence[int], semantic: bool = True
        ) -> dict[str, Any]:
    import dspy
    import numpy as np

    from judgealign.config import LMSettings
    from judgealign.datasets import load_ml_notebooks
    from judgealign.evaluation.bootstrap import paired_bootstrap
    from judgealign.evaluation.metrics import abs_errors
    from judgealign.lm import build_lm
    from judgealign.optimizers.memalign import MemAlign
    from judgealign.program import RubricJudge

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    data = load_ml_notebooks()
    labels = data.labels.for_dimensions(dims)
    pool, held_out = fold_split(labels, test=test)
    random.Random(POOL_SEED).shuffle(pool)
    if max(sizes) > len(pool):
        raise SystemExit(f"the feedback pool has {len(pool)} notebooks, fewer than {max(sizes)}")
    # The engine's answer cache stays on: it only saves repeated identical prompts (n = 0
    # judgments), which cannot change a score; every aligned judge's prompt is new.
    lm = build_lm(LMSettings(model="local"))
    test_labels = labels.subset(held_out)
    inputs = test_labels.items()
    items = [dict(inputs[i]) for i in held_out]
    reference = {d: test_labels.reference(d) for d in dims}
    human = {d: [reference[d][i] for i in held_out] for d in dims}
    errors, stats = {}, []
    for n in sizes:
        judge = RubricJudge(data.rubric, lm=lm, k=K, demo_input_tokens=DEMO_INPUT_TOKENS,
                            item_tokens=ITEM_TOKENS)
        start, kept, calls = time.perf_counter(), 0, 0
        if n:
            train = labels.subset(pool[:n])
            assert not set(train.item_ids) & set(held_out)  # the leakage guard, again
            judge = MemAlign(reflection_lm=lm, k=K, batch_examples=20, semantic=semantic,
                             demo_input_tokens=DEMO_INPUT_TOKENS).compile(judge, trainset=train)
            kept = sum(len(judge.judges[d].guidelines) for d in dims)
            calls = judge.report.lm_calls
        align_s = time.perf_counter() - start
        start = time.perf_counter()
        results = judge.batch(items, item_ids=held_out, dimensions=dims, progress=True)
        judge_s = time.perf_counter() - start
        errors[n] = np.stack([abs_errors(human[d], [r[d].score for r in results],
                                         [r[d].failed for r in results])[0] for d in dims])
        stats.append({"n": n, "guidelines": kept, "reflection_calls": calls,
                      "align_s": align_s, "judge_s": judge_s,
                      "failed": int(sum(r[d].failed for r in results for d in dims))})
        print(f"n={n:3d} align {align_s:6.1f}s judge {judge_s:6.1f}s guidelines {kept} "
              f"MAE {np.nanmean(errors[n], axis=1).round(2).tolist()}", file=sys.stderr,
              flush=True)
    table_rows = []
    for s in stats:
        boot = paired_bootstrap(errors[0], errors[s["n"]], n_resamples=N_RESAMPLES)
        for j, d in enumerate(dims):
            table_rows.append({**s, "dimension": d, "mae": float(boot.mae_b[j]),
                               "mae_ci": (float(boot.mae_b_ci_low[j]),
                                          float(boot.mae_b_ci_high[j])),
                               "diff": float(boot.diff[j]),
                               "diff_ci": (float(boot.ci_low[j]), float(boot.ci_high[j])),
                               "significant": bool(boot.significant[j]),
                               "n_scored": int(boot.n_items_paired[j])})
    return {"dims": list(dims), "semantic": semantic, "held_out": held_out, "pool": pool,
            "rows": table_rows, "stats": stats, "lm": lm.model}


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for d in result["dims"]:
        rows = [r for r in result["rows"] if r["dimension"] == d]
        xs = [r["n"] for r in rows]
        ys = [r["mae"] for r in rows]
        lo = [r["mae"] - r["mae_ci"][0] for r in rows]
        hi = [r["mae_ci"][1] - r["mae"] for r in rows]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=d)
    ax.set_xscale("symlog", linthresh=2)
    ax.set_xticks(sorted({r["n"] for r in result["rows"]}))
    ax.set_xticklabels([str(x) for x in sorted({r["n"] for r in result["rows"]})])
    ax.set_xlabel("feedback examples (notebooks) given to MemAlign")
    ax.set_ylabel(f"held-out MAE ({len(result['held_out'])} notebooks)")
    ax.set_title("Held-out MAE vs feedback (embedded SmolLM2-135M, 95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def render(result: dict[str, Any], argv: Sequence[str], mode: str, wall: float) -> str:
    rows = [[r["dimension"], r["n"], f"{r['mae']:.2f}",
             f"[{r['mae_ci'][0]:.2f}, {r['mae_ci'][1]:.2f}]",
             "–" if r["n"] == 0 else f"{r['diff']:+.2f}",
             "–" if r["n"] == 0 else f"[{r['diff_ci'][0]:+.2f}, {r['diff_ci'][1]:+.2f}]",
             "–" if r["n"] == 0 else ("yes" if r["significant"] else "no"), r["n_scored"]]
            for d in result["dims"] for r in result["rows"] if r["dimension"] == d]
    cost = [[s["n"], s["reflection_calls"], s["guidelines"], f"{s['align_s']:.0f}",
             f"{s['judge_s']:.0f}", s["failed"]] for s in result["stats"]]
    return "\n\n".join([
        f"## Memory scaling: held-out MAE vs number of feedback examples ({mode})",
        f"Command: `{command_line('benchmarks.memory_scaling', argv)}` — run took {wall:.0f} s. "
        f"Held out: {len(result['held_out'])} notebooks of fold {HELD_OUT_FOLD} "
        f"(`assign_folds(k={FOLDS}, seed={FOLD_SEED})`); feedback: the first n of the other "
        f"folds' {len(result['pool'])} notebooks (shuffled with seed {POOL_SEED}, nested). "
        f"MemAlign with {'both memories' if result['semantic'] else 'episodic memory only'}, "
        f"k={K}, notebooks cut to {ITEM_TOKENS} tokens; "
        f"95% CIs from a paired bootstrap over held-out items ({N_RESAMPLES:,} resamples). "
        "Plot: `benchmarks/memory_scaling.png`.",
        table(["dimension", "feedback n", "MAE", "95% CI", "change vs n=0", "95% CI of change",
               "significant", "items scored"], rows),
        "Cost per n (all dimensions together):",
        table(["n", "reflection calls", "guidelines kept", "align s", "judge s",
               "failed judgments"], cost),
        "![held-out MAE vs feedback](benchmarks/memory_scaling.png)",
        machine_markdown(lm=result["lm"] + " (llama-cpp-python, in-process)"),
    ])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 dimension, 5 held-out items, episodic memory only")
    parser.add_argument("--dims", nargs="+", help="dimensions (default: the mode's)")
    parser.add_argument("--test", type=int, help="held-out notebooks (default: the mode's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--episodic-only", action="store_true",
                        help="skip semantic memory (no reflection calls; see the module doc)")
    parser.add_argument("--no-write", action="store_true",
                        help="do not update BENCHMARKS.md or the PNG")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("ignore")
    mode = QUICK if args.quick else FULL
    sizes = sorted(set([0, *args.sizes]))
    start = time.perf_counter()
    result = run(args.dims or mode["dims"], args.test or mode["test"], sizes,
                 semantic=mode["semantic"] and not args.episodic_only)
    wall = time.perf_counter() - start
    if not args.no_write:
        plot(result, FIGURE)
        (ROOT / "benchmark-out").mkdir(exist_ok=True)
        (ROOT / "benchmark-out" / "memory_scaling.json").write_text(
            json.dumps(result, indent=2), encoding="utf-8")
    custom = args.dims or args.test or args.episodic_only or sizes != sorted(SIZES)
    label = "quick mode" if args.quick else "custom settings" if custom else "full mode"
    emit(SECTION, render(result, argv, label, wall), write=not args.no_write)


if __name__ == "__main__":
    main()
