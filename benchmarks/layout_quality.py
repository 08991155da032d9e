"""Does reading the item first cost quality? Cross-validation of the notebook judge with the
item-first and the classic prompt layout on the same folds (issue 15).

Run from the repository root::

    python -m benchmarks.layout_quality              # 2 dimensions, 24 notebooks, K=4
    python -m benchmarks.layout_quality --dry-run    # an instant scripted LM; never writes

``cross_validate`` (K=4 folds over items, seed 0) runs ``memalign`` (item-first layout: the
notebook first, fenced as data, shared by the dimensions' prompts) and ``memalign-classic``
(DSPy's JSONAdapter layout: instructions and demos first, the notebook last), both episodic
memory only with the score the LM writes (``sampled``: the layout's own effect, no
calibration on top), with ``judgealign demo``'s prompt budget (2 demos of <= 200 tokens,
notebooks cut to 600 tokens), beside the reference predictors. Reported per dimension: MAE
(failures charged) with its 95% CI for each layout, and the paired bootstrap difference
classic - item-first with its CI.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import command_line, emit, machine_markdown, table  # noqa: E402

SECTION = "layout_quality"
VARIANTS = ("memalign", "memalign-classic")
DIMENSIONS = ("model_training", "data_imputation")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=24, help="first N notebooks (default 24)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--bootstrap", type=int, default=10_000)
    parser.add_argument("--dry-run", action="store_true",
                        help="an instant scripted LM; never writes BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("ignore")

    from benchmarks.calibration import paired, scripted_judge
    from judgealign import build
    from judgealign.datasets import load_ml_notebooks
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions
    from judgealign.evaluation.runner import DEMO_MEMORY
    from judgealign.lm import lm_identity

    settings = build.settings_from(None, overrides={
        "memory": {**DEMO_MEMORY, "semantic": False}, "scoring": {"policy": "sampled"}})
    if args.dry_run:
        import dspy

        from judgealign.testing import scripted_lm

        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        lm = scripted_lm(scripted_judge, name="scripted/dry-run")
    else:
        lm = build.judge_lm(settings)
    data = load_ml_notebooks()
    options = CVOptions(variants=VARIANTS, folds=args.folds, seed=0, dimensions=DIMENSIONS,
                        limit=args.limit, n_bootstrap=args.bootstrap, progress=True)
    start = time.perf_counter()
    result = cross_validate(data.rubric, data.labels, settings, options, lm=lm)
    seconds = time.perf_counter() - start
    levels = list(data.rubric.scale)
    rows = []
    for dim in result.dimensions:
        for row in result.rows:
            m = result.mae_of(row, dim)
            if m is None or row not in (*VARIANTS, *result.references):
                continue
            label = {"memalign": "item-first (memalign)",
                     "memalign-classic": "classic (memalign-classic)"}.get(
                row, f"{row} (reference)")
            diff = "—"
            if row == "memalign-classic":
                d = paired(result, "memalign", "memalign-classic", dim, levels, args.bootstrap)
                diff = (f"{d['diff']:+.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"
                        + (" *" if d["significant"] else ""))
            rows.append([dim, label, f"{m['mae']:.2f}", f"[{m['ci_low']:.2f}, {m['ci_high']:.2f}]",
                         str(m["n_failed"]), diff])
    costs = result.cost_totals()
    cost = "; ".join(f"{v}: {int(costs[v]['judge_calls'])} judge calls, "
                     f"{int(costs[v]['judge_seconds'])} s" for v in VARIANTS if v in costs)
    ident = " ".join(f"{k}={v}" for k, v in lm_identity(lm).items() if k != "model_sha256")
    markdown = "\n\n".join([
        "## Prompt layout and quality: item-first vs classic (issue 15)",
        f"Command: `{command_line('benchmarks.layout_quality', argv)}` — bundled notebooks, "
        f"dimensions {', '.join(DIMENSIONS)}, first {args.limit} items, K={args.folds}, seed 0, "
        "episodic memory only, score policy `sampled`, memory settings "
        f"{DEMO_MEMORY}; {args.bootstrap:,} paired bootstrap resamples.",
        table(["dimension", "row", "MAE", "95% CI", "failed",
               "classic − item-first [95% CI] (* significant)"], rows),
        f"Cost: {cost}. Wall time of the cross-validation: {seconds:.0f} s (judgments the "
        "embedded engine's answer cache already held, e.g. from `benchmarks.calibration`, "
        "cost nothing).",
        machine_markdown(lm=ident)])
    emit(SECTION, markdown, write=not (args.no_write or args.dry_run))


if __name__ == "__main__":
    main()
