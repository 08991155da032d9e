"""Score policies against the reference predictors: is the calibrated judge ever worse than a
constant?

Run from the repository root::

    python -m benchmarks.calibration                  # notebooks (2 dims, 24 items) + CoNaLa (150)
    python -m benchmarks.calibration --sets conala    # one data set
    python -m benchmarks.calibration --quick          # 1 dim x 8 notebooks, 12 CoNaLa items, K=2
    python -m benchmarks.calibration --dry-run        # the machinery with an instant scripted LM

For each data set, ``cross_validate`` (K=4 folds over items, seed 0, exactly as ``judgealign cv``)
runs the variants ``baseline`` (unaligned; the configured policy, which without a calibration
scores as ``expected``), ``memalign-sampled`` (the level the LM writes: judgealign before score
policies) and ``memalign`` (the configured policy, default ``calibrated``: a calibration fitted
per dimension and fold on the training labels), beside the reference predictors ``constant``
(training median) and ``neighbours`` (median of the k nearest training items). The judge LM is
the configured one (``judgealign.toml`` / ``JUDGEALIGN_LM__*``; default the embedded
SmolLM2-135M). Reported per dimension: MAE with failures charged and its 95% paired-bootstrap
CI, the paired difference to the better reference, the cost, the calibrations the folds
fitted, and two checks: the calibrated judge is not significantly worse than the better
reference, and it beats the sampled judge wherever that one loses to the constant.

Data: (a) the bundled notebooks, dimensions ``model_training`` and ``data_imputation``, first
24 items, judged with ``judgealign demo``'s prompt budget (2 demos of <= 200 tokens, notebooks
cut to 600 tokens); (b) CoNaLa ``usefulness``, first 150 items (real human grades, 0-4), 2
demos.
``--episodic-only`` switches reflection off for every variant (no guideline is kept on the
embedded model anyway: see ``benchmarks.align_notebooks``), which saves most of the time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import command_line, emit, machine_markdown, table  # noqa: E402

SECTION = "calibration"
VARIANTS = ("baseline", "memalign-sampled", "memalign")
SETS: dict[str, dict[str, Any]] = {
    "notebooks": {"loader": "load_ml_notebooks", "title": "bundled ML notebooks",
                  "dims": ("model_training", "data_imputation"), "limit": 24,
                  "memory": "demo"},
    "conala": {"loader": "load_conala", "title": "CoNaLa usefulness (human grades 0-4)",
               "dims": ("usefulness",), "limit": 150, "memory": {"k": 2}},
}
QUICK = {"notebooks": {"dims": ("model_training",), "limit": 8},
         "conala": {"dims": ("usefulness",), "limit": 12}}


def scripted_judge(prompt: str) -> Any:
    """``--dry-run``'s instant judge: a distribution leaning on the first demo's score."""
    import re

    from judgealign.testing import with_levels

    levels = re.findall(r"^- (\d+|N/A): ", prompt, flags=re.MULTILINE)
    numeric = [lab for lab in dict.fromkeys(levels) if lab != "N/A"] or ["1", "2", "3"]
    demo = re.search(r'"score": "(\d+)"', prompt)
    top = demo.group(1) if demo and demo.group(1) in numeric else numeric[-1]
    dist = dict.fromkeys(numeric, 0.1)
    dist[top] = 0.6
    return with_levels({"score": top, "rationale": "scripted"}, dist)


def item_errors(result: Any, row: str, dim: str, ids: Sequence[str], levels: Sequence[int]
                ) -> Any:
    """Per-item charged errors of one row on one dimension, in ``ids`` order (NaN: none)."""
    import numpy as np

    from judgealign.evaluation.metrics import charged_errors

    recs = {r.item_id: r for r in result.records if r.variant == row and r.dimension == dim}
    out = np.full(len(ids), np.nan)
    got = [i for i in ids if i in recs]
    charged = charged_errors([recs[i].human for i in got], [recs[i].judge for i in got],
                             [bool(recs[i].failed) for i in got], levels=levels)
    for i, e in zip(got, charged, strict=True):
        out[list(ids).index(i)] = float(e)
    return out


def paired(result: Any, a: str, b: str, dim: str, levels: Sequence[int], n: int
           ) -> dict[str, Any]:
    """Paired bootstrap of ``b - a`` (negative: ``b`` errs less)."""
    from judgealign.evaluation.bootstrap import paired_bootstrap

    ids = sorted({r.item_id for r in result.records if r.dimension == dim})
    return paired_bootstrap(item_errors(result, a, dim, ids, levels),
                            item_errors(result, b, dim, ids, levels),
                            n_resamples=n, seed=0).to_records()[0]


def _ci(low: Any, high: Any) -> str:
    return "n/a" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def run_set(name: str, args: argparse.Namespace, settings: Any, lm: Any) -> dict[str, Any]:
    import judgealign.datasets as datasets
    from judgealign import build
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions
    from judgealign.evaluation.report import write_report
    from judgealign.evaluation.runner import DEMO_MEMORY

    spec = {**SETS[name], **(QUICK[name] if args.quick else {})}
    if args.limit:
        spec["limit"] = args.limit
    data = getattr(datasets, spec["loader"])()
    # Notebooks are judged with the demo's prompt budget (2 demos of <= 200 tokens, the item
    # cut to 600 tokens: what 2 cores afford); CoNaLa items are short and keep theirs.
    memory = DEMO_MEMORY if spec["memory"] == "demo" else spec["memory"]
    settings = build.settings_from(settings, overrides={"memory": memory})
    options = CVOptions(variants=VARIANTS, folds=args.folds, seed=0, dimensions=spec["dims"],
                        limit=spec["limit"], n_bootstrap=args.bootstrap, progress=True)
    start = time.perf_counter()
    result = cross_validate(data.rubric, data.labels, settings, options, lm=lm)
    seconds = time.perf_counter() - start
    if args.out:
        write_report(result, Path(args.out) / name)
    return {"name": name, "spec": spec, "result": result, "seconds": seconds, "memory": memory,
            "levels": list(data.rubric.scale), "items": result.data.get("items")}


def set_markdown(run: dict[str, Any], n_boot: int) -> str:
    result, levels = run["result"], run["levels"]
    costs = result.cost_totals()
    rows, checks = [], []
    for dim in result.dimensions:
        better = result.best_reference.get(dim)
        for row in result.rows:
            m = result.mae_of(row, dim)
            if m is None:
                continue
            comp = result.comparison(row, dim, against="reference")
            diff = "—" if comp is None or comp.get("diff") is None else (
                f"{comp['diff']:+.2f} {_ci(comp['ci_low'], comp['ci_high'])}"
                + (" *" if comp.get("significant") else ""))
            c = costs.get(row)
            cost = ("0 (no LM)" if c is None and row in result.references else "—" if c is None
                    else f"{int(c['align_calls'])} + {int(c['judge_calls'])} calls, "
                         f"{c['align_seconds'] + c['judge_seconds']:.0f} s")
            label = (f"{row} (reference)" if row in result.references else
                     row if row in result.variants else "human vs human (ceiling)")
            rows.append([dim, label, f"{m['mae']:.2f}", _ci(m["ci_low"], m["ci_high"]),
                         str(m["n_failed"]), diff, cost])
        cal = result.comparison("memalign", dim, against="reference")
        if cal is not None and cal.get("diff") is not None:
            worse = cal["significant"] and cal["diff"] > 0
            checks.append(f"- {dim}: calibrated vs the better reference ({better}): "
                          f"{cal['diff']:+.2f} {_ci(cal['ci_low'], cal['ci_high'])} — "
                          + ("**significantly worse**" if worse else
                             "not significantly worse"))
        if "constant" in result.references:
            lose = paired(result, "constant", "memalign-sampled", dim, levels, n_boot)
            if lose["diff"] is not None and lose["diff"] > 0:
                beat = paired(result, "memalign-sampled", "memalign", dim, levels, n_boot)
                checks.append(f"- {dim}: the sampled judge loses to the constant by "
                              f"{lose['diff']:+.2f} {_ci(lose['ci_low'], lose['ci_high'])}; "
                              f"calibrated vs sampled {beat['diff']:+.2f} "
                              f"{_ci(beat['ci_low'], beat['ci_high'])}"
                              + (" (beats it significantly)" if beat["significant"]
                                 and beat["diff"] < 0 else ""))
            else:
                checks.append(f"- {dim}: the sampled judge does not lose to the constant "
                              f"({lose['diff']:+.2f})")
    kinds: dict[str, int] = {}
    for (variant, _), report in result.align_reports.items():
        if variant == "memalign":
            for d in report.get("dimensions") or []:
                if d.get("calibration"):
                    kinds[d["calibration"]["kind"]] = kinds.get(d["calibration"]["kind"], 0) + 1
    spec = run["spec"]
    parts = [f"### {SETS[run['name']]['title']}: {', '.join(spec['dims'])}, first "
             f"{spec['limit']} items ({run['items']} with labels), K={result.settings['folds']}; "
             f"memory settings {run['memory']}",
             table(["dimension", "row", "MAE", "95% CI", "failed",
                    "Δ vs better reference [95% CI] (* significant)", "cost (align + judge)"],
                   rows),
             "Calibrations fitted by the `memalign` folds (per dimension and fold): "
             + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
             "\n".join(checks), f"Wall time of the cross-validation: {run['seconds']:.0f} s."]
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="notebooks,conala",
                        help="comma-separated: notebooks, conala")
    parser.add_argument("--folds", type=int, default=None, help="default 4 (quick: 2)")
    parser.add_argument("--bootstrap", type=int, default=None,
                        help="paired resamples, default 10,000 (quick: 1,000)")
    parser.add_argument("--limit", type=int, default=None, help="first N items of each set")
    parser.add_argument("--quick", action="store_true", help="a few items, K=2")
    parser.add_argument("--episodic-only", action="store_true",
                        help="no reflection in any variant (saves most of the time)")
    parser.add_argument("--dry-run", action="store_true",
                        help="an instant scripted LM; never writes BENCHMARKS.md")
    parser.add_argument("--out", default=None, help="also write each set's CV report here")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    args.folds = args.folds or (2 if args.quick else 4)
    args.bootstrap = args.bootstrap or (1_000 if args.quick else 10_000)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; known: {', '.join(SETS)}")
    warnings.simplefilter("ignore")

    from judgealign import build
    from judgealign.lm import lm_identity
    from judgealign.testing import scripted_lm

    overrides = {"memory": {"semantic": False}} if args.episodic_only else None
    settings = build.settings_from(None, overrides=overrides)
    if args.dry_run:
        import dspy

        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        lm = scripted_lm(scripted_judge, name="scripted/dry-run")
    else:
        lm = build.judge_lm(settings)
    with tempfile.TemporaryDirectory():
        runs = [run_set(name, args, settings, lm) for name in names]
    lm_name = " ".join(f"{k}={v}" for k, v in lm_identity(lm).items() if k != "model_sha256")
    markdown = "\n\n".join([
        "## Score policies vs reference predictors (issue 13)",
        f"Command: `{command_line('benchmarks.calibration', argv)}` — variants "
        f"{', '.join(VARIANTS)} and the references constant and neighbours, seed 0, "
        f"{args.bootstrap:,} paired bootstrap resamples; policy of `memalign`: "
        f"`{settings.scoring.policy}`"
        + ("; reflection off (`--episodic-only`)" if args.episodic_only else "")
        + ". MAE charges failures (see the report's method section); Δ is the row minus the "
        "better reference of the dimension, negative = fewer errors.",
        *[set_markdown(run, args.bootstrap) for run in runs],
        machine_markdown(lm=lm_name),
    ])
    emit(SECTION, markdown, write=not (args.no_write or args.dry_run))


if __name__ == "__main__":
    main()
