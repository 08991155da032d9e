"""The framework's own cost: a full cross-validation with an instant scripted LM.

Run from the repository root::

    python -m benchmarks.cv_overhead            # 9 dimensions x 50 notebooks, K=4, 10,000 resamples
    python -m benchmarks.cv_overhead --quick    # 3 dimensions x 24 notebooks, 1,000 resamples

``cross_validate`` runs exactly as ``judgealign cv`` does (baseline, memalign, semantic-only,
episodic-only, the constant and neighbours reference predictors; folds aligned through
``judgealign.build`` with the default settings, judging, bootstrap, report files), but the judge
and reflection LM are a scripted engine that answers at once, so what is timed is judgealign
itself: prompt building and fitting, embedding, Chroma, grounding, validation, bookkeeping,
analysis and the report. The scripted judge copies the score of the first demo in its prompt
(else answers "2"); the scripted reflection LM proposes one guideline per batch quoting the
first example's rationale (per-example calls: that example's rationale).
"""

from __future__ import annotations

import argparse
import re
import resource
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

SECTION = "cv_overhead"
VARIANTS = ("baseline", "memalign", "semantic-only", "episodic-only")
FULL = {"dims": None, "limit": 50, "n_bootstrap": 10_000}
QUICK = {"dims": ("data_imputation", "model_training", "metrics_evaluation"), "limit": 24,
         "n_bootstrap": 1_000}


def respond(prompt: str) -> dict[str, Any]:
    if "existing_guidelines" in prompt:  # cited reflection (an input only it has)
        found = re.search(r"\[(E\d+)\] expert score: \S+\nexpert rationale: ([^\n]*)", prompt)
        if not found:
            return {"guidelines": []}
        return {"guidelines": [{"text": found.group(2)[:200], "sources": [found.group(1)]}]}
    if "`guideline`" in prompt:  # per-example reflection: one rule, sources implicit
        found = re.search(r"expert rationale: ([^\n]*)", prompt)
        return {"guideline": found.group(1)[:200] if found else "Follow the rubric."}
    demo = re.search(r'"score": "(\d|N/A)"', prompt)
    return {"score": demo.group(1) if demo else "2", "rationale": "scripted"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 dimensions x 24 notebooks")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("ignore")
    mode = QUICK if args.quick else FULL

    import dspy

    from judgealign.config import Settings
    from judgealign.datasets import load_ml_notebooks
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions
    from judgealign.evaluation.report import write_report
    from judgealign.testing import scripted_lm

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    data = load_ml_notebooks()
    lm = scripted_lm(respond, name="scripted/instant")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        options = CVOptions(variants=VARIANTS, folds=4, seed=0, dimensions=mode["dims"],
                            limit=mode["limit"], n_bootstrap=mode["n_bootstrap"],
                            progress=False, checkpoint_dir=Path(tmp) / "ckpt")
        result = cross_validate(data.rubric, data.labels, Settings(), options, lm=lm)
        cv_s = time.perf_counter() - start
        start = time.perf_counter()
        write_report(result, Path(tmp) / "report")
        report_s = time.perf_counter() - start
    calls = lm.engine.calls
    dims = mode["dims"] or data.rubric.dimension_ids
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [["`cross_validate` (align + judge + bootstrap, checkpoints on)", f"{cv_s:.1f} s"],
            ["`write_report` (report.md, results.json, mae.png)", f"{report_s:.1f} s"],
            ["scripted LM calls (judging + reflection)", f"{calls:,}"],
            ["held-out judgments recorded", f"{len(result.records):,}"],
            ["framework time per LM call", f"{1000 * cv_s / max(calls, 1):.1f} ms"],
            ["peak RSS of the process", f"{peak_mib:.0f} MiB"]]
    mode_name = "quick" if args.quick else "full"
    markdown = "\n\n".join([
        f"## Evaluation engine: a full `cv` with an instant scripted LM ({mode_name} mode)",
        f"Command: `{command_line('benchmarks.cv_overhead', argv)}` — bundled notebook data, "
        f"{len(dims)} dimensions × first {mode['limit']} notebooks, K=4, variants "
        f"{', '.join(VARIANTS)} and the reference predictors, default settings, "
        f"{mode['n_bootstrap']:,} bootstrap resamples. The LM answers instantly, so every "
        "second here is judgealign's own overhead.",
        table(["what", "figure"], rows),
        machine_markdown(lm="scripted (judgealign.testing.scripted_lm), instant"),
    ])
    emit(SECTION, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
