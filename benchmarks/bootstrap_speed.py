"""Time ``paired_bootstrap`` on the size of a full report and print a markdown snippet.

Run from the repository root::

    python -m benchmarks.bootstrap_speed           # 10,000 resamples x 9 dims x 50 items
    python -m benchmarks.bootstrap_speed --quick   # smaller smoke run, seconds at most

The snippet goes to stdout only; merging it into BENCHMARKS.md is left to a human.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    # Run as a file path: make the repository root importable without an install.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from judgealign.evaluation.bootstrap import paired_bootstrap  # noqa: E402

FULL = {"n_resamples": 10_000, "n_dims": 9, "n_items": 50, "runs": 5}
QUICK = {"n_resamples": 1_000, "n_dims": 9, "n_items": 50, "runs": 3}
# Some items without a label on a dimension (NaN: failures and N/A are charged, not NaN, in
# cross-validation), so the masked path is what gets timed.
NAN_FRACTION = 0.1


def make_errors(n_dims: int, n_items: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic absolute errors of two variants on a 0..4 scale.

    Returns
    -------
    errors_a, errors_b : numpy.ndarray of float64, shape ``(n_dims, n_items)``
        About ``NAN_FRACTION`` of the entries of each are NaN.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, size=(n_dims, n_items)).astype(np.float64)
    b = np.clip(a - rng.integers(0, 2, size=(n_dims, n_items)), 0, None).astype(np.float64)
    a[rng.random(a.shape) < NAN_FRACTION] = np.nan
    b[rng.random(b.shape) < NAN_FRACTION] = np.nan
    return a, b


def time_runs(n_resamples: int, n_dims: int, n_items: int, runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``paired_bootstrap``, after one warm-up."""
    a, b = make_errors(n_dims, n_items)
    paired_bootstrap(a, b, n_resamples=n_resamples)  # warm-up: caches, lazy BLAS init
    seconds = []
    for run in range(runs):
        start = time.perf_counter()
        paired_bootstrap(a, b, n_resamples=n_resamples, seed=run)
        seconds.append(time.perf_counter() - start)
    return seconds


def machine_description() -> str:
    """CPUs usable by this process (what ``nproc`` prints) and total RAM."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram = "unknown RAM"
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    ram = f"{kib / 2**20:.1f} GiB RAM"
                    break
    except OSError:
        pass
    return f"{cpus} CPUs (nproc), {ram}, {platform.machine()}"


def run(quick: bool = False) -> str:
    """Run the benchmark and return the markdown snippet.

    Parameters
    ----------
    quick : bool, default False
        Use the smaller ``QUICK`` workload instead of ``FULL``.
    """
    cfg = QUICK if quick else FULL
    seconds = time_runs(cfg["n_resamples"], cfg["n_dims"], cfg["n_items"], cfg["runs"])
    median_ms = statistics.median(seconds) * 1e3
    spread = f"min {min(seconds) * 1e3:.1f}, max {max(seconds) * 1e3:.1f}"
    command = "python -m benchmarks.bootstrap_speed" + (" --quick" if quick else "")
    workload = (
        f"{cfg['n_resamples']:,} resamples × {cfg['n_dims']} dimensions × "
        f"{cfg['n_items']} items ({NAN_FRACTION:.0%} NaN per variant)"
    )
    rows = [
        ("command", f"`{command}`"),
        ("workload", workload),
        ("timing", f"median of {cfg['runs']} runs after 1 warm-up"),
        ("result", f"**{median_ms:.1f} ms** per call ({spread})"),
        ("machine", machine_description()),
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d (UTC)")),
        ("numpy", np.__version__),
        ("python", platform.python_version()),
    ]
    lines = ["### paired_bootstrap speed", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv``, print the snippet and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller smoke workload")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    snippet = run(quick=args.quick)
    from benchmarks._report import emit

    emit("bootstrap", snippet.replace("### paired_bootstrap speed",
                                      "## Evaluation engine: paired bootstrap speed"),
         write=not args.no_write)
    return snippet


if __name__ == "__main__":
    main()
