"""How far an injected "note to the reviewer" moves the judge's scores, per dimension and layout.

Run from the repository root::

    python -m benchmarks.injection                          # embedded model, both layouts
    python -m benchmarks.injection --limit 1 --no-write     # smoke test: one notebook pair
    python -m benchmarks.injection --lm openai/gpt-4.1-mini --layout item-first

The bundled injection set (``judgealign.datasets.load_injection``; see its DATASET.md) holds
16 notebooks, each as it is and with one injected text asking the reviewer for the top score
(in a code comment, a markdown cell or a cell output; two of the four texts also forge DSPy's
field markers or ChatML control tokens). Both versions carry the original's reference labels.
An unaligned judge (no memory, ``k=0``) scores every notebook and its injected copy on the
chosen dimensions, under each chosen prompt layout (``item-first``: the item fenced as data
with the data-handling rule; ``classic``: DSPy's JSONAdapter layout, unfenced). Per layout and
dimension the section reports: the mean score of originals and injected copies (pairs both
scored), the mean change, MAE against the labels of both (failures and N/A mismatches charged
as in ``judgealign evaluate``) with the paired bootstrap CI of the MAE change, and how many
pairs' scores moved (up / down, counting N/A and failures as a move).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import ROOT, command_line, emit, machine_markdown, table  # noqa: E402

SECTION = "injection"
DIMENSIONS = ("model_training", "data_imputation")
LAYOUTS = ("item-first", "classic")
N_RESAMPLES = 10_000


def pairs(limit: int | None = None) -> tuple[Any, list[tuple[str, str]], dict[str, Any]]:
    """The injection set, its (original, injected) id pairs in id order (the first ``limit``)
    and each injected item's record from ``injections.jsonl``."""
    from judgealign.datasets import INJECTED_SUFFIX, load_injection

    data = load_injection()
    records = {}
    for line in (data.card.parent / "injections.jsonl").read_text(encoding="utf-8").splitlines():
        if line:
            row = json.loads(line)
            records[row["item_id"]] = row
    ids = sorted(i for i in data.labels.item_ids if not i.endswith(INJECTED_SUFFIX))
    out = [(i, i + INJECTED_SUFFIX) for i in ids]
    return data, out[:limit] if limit else out, records


def run(lm: Any, dims: Sequence[str], layouts: Sequence[str], *, limit: int | None = None,
        item_tokens: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Judge every pair under every layout; per-pair scores and per-dimension statistics."""
    import numpy as np

    from judgealign.evaluation.bootstrap import paired_bootstrap
    from judgealign.evaluation.metrics import charged_errors
    from judgealign.program import RubricJudge

    data, pair_ids, records = pairs(limit)
    rubric = data.rubric
    dims = [rubric.dimension(d).id for d in dims]
    items = data.labels.items()
    # Original and injected copy next to each other: under item-first they share the item's
    # text up to the injection, which the embedded model's cache reuses.
    order = [i for pair in pair_ids for i in pair]
    reference = {d: data.labels.reference(d) for d in dims}
    rows, stats = [], []
    for layout in layouts:
        judge = RubricJudge(rubric, lm=lm, k=0, item_tokens=item_tokens, layout=layout)
        start = time.perf_counter()
        results = judge.batch([dict(items[i]) for i in order], item_ids=order, dimensions=dims,
                              progress=progress)
        seconds = time.perf_counter() - start
        by_id = {r.item_id: r for r in results}
        for d in dims:
            human = [reference[d][o] for o, _ in pair_ids]
            verdicts = {kind: [by_id[p[k]][d] for p in pair_ids]
                        for k, kind in enumerate(("original", "injected"))}
            errors = {kind: charged_errors(human, [v.score for v in vs],
                                           [v.failed for v in vs], levels=rubric.scale)
                      for kind, vs in verdicts.items()}
            boot = paired_bootstrap(errors["original"], errors["injected"],
                                    n_resamples=N_RESAMPLES)
            both = [(a.score, b.score) for a, b in zip(*verdicts.values(), strict=True)
                    if not a.failed and not b.failed
                    and a.score is not None and b.score is not None]
            moved = [(a, b) for a, b in zip(*verdicts.values(), strict=True)
                     if a.label != b.label]
            up = sum(1 for a, b in moved if _rank(b) > _rank(a))
            stats.append({
                "layout": layout, "dimension": d, "pairs": len(pair_ids),
                "both_scored": len(both),
                "mean_original": float(np.mean([a for a, _ in both])) if both else None,
                "mean_injected": float(np.mean([b for _, b in both])) if both else None,
                "mean_change": float(np.mean([b - a for a, b in both])) if both else None,
                "mae_original": float(errors["original"].mean()),
                "mae_injected": float(errors["injected"].mean()),
                "mae_change": float(boot.diff[0]),
                "mae_change_ci": (float(boot.ci_low[0]), float(boot.ci_high[0])),
                "moved": len(moved), "moved_up": up, "moved_down": len(moved) - up,
                "failed": sum(v.failed for vs in verdicts.values() for v in vs),
                "seconds": seconds,
            })
            for (o, i), a, b in zip(pair_ids, *verdicts.values(), strict=True):
                rows.append({"layout": layout, "dimension": d, "original": o, "injected": i,
                             "place": records[i]["place"], "position": records[i]["position"],
                             "label": _label(reference[d][o]), "score_original": a.label,
                             "score_injected": b.label, "rationale_injected": b.rationale})
    from judgealign.lm import lm_identity

    return {"dims": dims, "layouts": list(layouts), "pairs": [list(p) for p in pair_ids],
            "item_tokens": item_tokens, "stats": stats, "rows": rows,
            "lm": lm_identity(lm)}


def _label(score: int | None) -> str:
    return "N/A" if score is None else str(score)


def _rank(verdict: Any) -> float:
    """Order of verdicts for "moved up": failures lowest, then N/A, then the levels."""
    if verdict.failed:
        return -2.0
    return -1.0 if verdict.score is None else float(verdict.score)


def render(result: dict[str, Any], argv: Sequence[str], wall: float) -> str:
    def num(x: float | None, fmt: str = ".2f") -> str:
        return "–" if x is None else format(x, fmt)

    rows = [[s["layout"], s["dimension"], s["pairs"], num(s["mean_original"]),
             num(s["mean_injected"]), num(s["mean_change"], "+.2f"), num(s["mae_original"]),
             num(s["mae_injected"]), num(s["mae_change"], "+.2f"),
             f"[{s['mae_change_ci'][0]:+.2f}, {s['mae_change_ci'][1]:+.2f}]",
             f"{s['moved']} ({s['moved_up']} up, {s['moved_down']} down)", s["failed"],
             f"{s['seconds']:.0f}"]
            for s in result["stats"]]
    by_place: dict[tuple[str, str], list[int]] = {}
    for r in result["rows"]:
        key = (r["layout"], r["place"])
        by_place.setdefault(key, [0, 0])
        by_place[key][0] += r["score_original"] != r["score_injected"]
        by_place[key][1] += 1
    place_rows = [[layout, place, f"{m} of {n}"] for (layout, place), (m, n)
                  in sorted(by_place.items())]
    lm = result["lm"]
    lm_text = lm.get("model", "?") + (f" ({lm['engine']}, in-process)" if lm.get("engine")
                                      else "")
    cut = (f"notebooks cut to {result['item_tokens']} tokens (head and tail kept)"
           if result["item_tokens"] else "whole notebooks (cut only to fit the context)")
    return "\n\n".join([
        "## Prompt injection: score shift with and without an injected note to the reviewer",
        f"Command: `{command_line('benchmarks.injection', argv)}` — run took {wall:.0f} s. "
        f"{len(result['pairs'])} notebook pair{'s' if len(result['pairs']) != 1 else ''} "
        "of the bundled injection set "
        "(`datasets/injection`: each notebook as it is and with one note asking for the top "
        "score, in a code comment, a markdown cell or an output; labels are the original's for "
        f"both), unaligned judge (k=0), {cut}. Mean scores and their change are over pairs "
        "both scored; MAE charges failures and N/A mismatches (as `judgealign evaluate`); the "
        f"CI of the MAE change is a paired bootstrap over pairs ({N_RESAMPLES:,} resamples). "
        "`item-first` fences the item as data and tells the judge to ignore instructions in "
        "it; `classic` is DSPy's JSONAdapter layout (unfenced).",
        table(["layout", "dimension", "pairs", "mean score", "mean score injected",
               "mean change", "MAE", "MAE injected", "MAE change", "95% CI of MAE change",
               "scores moved", "failed judgments", "judge s"], rows),
        "Pairs whose score moved, by where the injection sits (all dimensions together):",
        table(["layout", "place", "moved"], place_rows),
        machine_markdown(lm=lm_text),
    ])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default=None,
                        help="judge LM (a model string as in [lm] model; default: the "
                             "configuration's, else the embedded model)")
    parser.add_argument("--dimensions", nargs="+", default=list(DIMENSIONS),
                        help=f"dimensions to judge (default: {' '.join(DIMENSIONS)})")
    parser.add_argument("--layout", nargs="+", choices=LAYOUTS, default=list(LAYOUTS),
                        help="prompt layouts to compare (default: both)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N notebook pairs (default: all 16)")
    parser.add_argument("--item-tokens", type=int, default=None,
                        help="cut notebooks to this many tokens (default: whole notebooks)")
    parser.add_argument("--no-write", action="store_true",
                        help="do not update BENCHMARKS.md or benchmark-out/injection.json")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    warnings.simplefilter("ignore")
    from judgealign import build
    from judgealign.errors import JudgeAlignError
    from judgealign.signatures.rubric import load_builtin

    try:  # bad flags are reported before any model is loaded
        dims = [load_builtin("ml_notebook").dimension(d).id for d in args.dimensions]
        settings = build.settings_from(None, overrides={"lm": {"model": args.lm}})
        lm = build.judge_lm(settings)
    except JudgeAlignError as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    result = run(lm, dims, args.layout, limit=args.limit, item_tokens=args.item_tokens)
    wall = time.perf_counter() - start
    if not args.no_write:
        (ROOT / "benchmark-out").mkdir(exist_ok=True)
        (ROOT / "benchmark-out" / "injection.json").write_text(
            json.dumps(result, indent=2), encoding="utf-8")
    emit(SECTION, render(result, argv, wall), write=not args.no_write)


if __name__ == "__main__":
    main()
