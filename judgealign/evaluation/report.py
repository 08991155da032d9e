"""The report of a cross-validation: ``results.json``, ``report.md`` and ``mae.png``.

``results.json`` holds everything, every held-out score included, so that any number or
figure of the report can be recomputed from it. ``report.md`` says per dimension whether each
variant lowers the baseline's mean absolute error, by how much, with the paired bootstrap 95%
CI, and gives the agreement metrics, failures, costs and a summary of the data. ``mae.png``
draws the MAE per dimension and variant with bootstrap CIs as error bars.

The figure is drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot), so
writing a report never changes the process-wide matplotlib backend.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from judgealign.evaluation.crossval import BASELINE, CVResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_report(result: CVResult, out_dir: str | Path, *,
                 dataset_card: str | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and ``mae.png`` into ``out_dir``.

    Parameters
    ----------
    result
        What :func:`~judgealign.evaluation.crossval.cross_validate` returned.
    out_dir
        Created if needed; the three files are replaced atomically.
    dataset_card
        Markdown describing the data set (origin, licence, how labels were made), appended
        to the report.

    Returns
    -------
    dict
        ``{"results": ..., "report": ..., "figure": ...}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "report": out / "report.md",
             "figure": out / "mae.png"}
    _write_text(paths["results"], json.dumps(result.to_dict(), indent=1, ensure_ascii=False,
                                             allow_nan=False))
    _write_text(paths["report"], render_markdown(result, figure=paths["figure"].name,
                                                 dataset_card=dataset_card))
    write_figure(result, paths["figure"])
    return paths


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- numbers as text ---------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}"


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.0f}%"


def _ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "–"
    return f"[{low:+.2f}, {high:+.2f}]"


def _dim_name(result: CVResult, dim: str) -> str:
    return result.settings.get("dimension_names", {}).get(dim, dim)


def verdict(comparison: dict[str, Any]) -> str:
    """One sentence on a comparison record: does the variant lower the baseline's MAE?"""
    v, dim = comparison["variant"], comparison["dimension"]
    a, b, diff = comparison["mae_a"], comparison["mae_b"], comparison["diff"]
    if a is None or b is None or diff is None:
        return f"{v} vs baseline on {dim}: no item was scored by both, nothing to compare."
    conf = round(100 * comparison["confidence"])
    ci = _ci(comparison["ci_low"], comparison["ci_high"])
    if comparison["significant"]:
        verb = "lowers" if diff < 0 else "raises"
        tail = f"significant (the {conf}% CI {ci} excludes 0)"
    else:
        verb = "lowers" if diff < 0 else "raises" if diff > 0 else "leaves"
        tail = f"not significant (the {conf}% CI {ci} includes 0)"
    n = comparison["n_items_paired"]
    if diff == 0:
        return f"{v} leaves the MAE on {dim} unchanged at {a:.2f} (n={n}): {tail}."
    rel = comparison["relative_reduction"]
    change = ("" if rel is None else f", {_pct(rel)} error reduction" if rel >= 0
              else f", {_pct(-rel)} more error")
    return (f"{v} {verb} the MAE on {dim} from {a:.2f} to {b:.2f} ({diff:+.2f}{change}, "
            f"n={n}): {tail}.")


# --- the terminal table ------------------------------------------------------------------------


def format_table(result: CVResult) -> str:
    """The results as a plain-text table with aligned columns (one row per dimension x
    variant): pooled MAE, its change against baseline with the paired 95% CI, significance,
    exact agreement, QWK and failures."""
    head = ["dimension", "variant", "n", "MAE", "vs base", "95% CI", "sig", "exact", "QWK",
            "failed"]
    rows = [head]
    for dim in result.dimensions:
        for v in result.variants:
            a = result.agreement[(v, dim)]
            comp = result.comparison(v, dim)
            rows.append([
                dim, v, str(a.n_items), _num(a.mae), _signed(comp["diff"]) if comp else "",
                _ci(comp["ci_low"], comp["ci_high"]) if comp else "",
                ("yes" if comp["significant"] else "no") if comp else "",
                _num(a.exact), _num(a.qwk), str(a.n_failed)])
    return _align(rows, right_from=2)


def _align(rows: Sequence[Sequence[str]], *, right_from: int) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < right_from else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- report.md ---------------------------------------------------------------------------------


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render_markdown(result: CVResult, *, figure: str | None = "mae.png",
                    dataset_card: str | None = None) -> str:
    """``report.md`` as text (see :func:`write_report`)."""
    s = result.settings
    lines = [f"# Cross-validation of judge alignment: `{s.get('rubric', '?')}`", ""]
    lines += _summary(result)
    lines += _settings_section(result)
    lines += _mae_section(result, figure)
    lines += _agreement_section(result)
    lines += _cost_section(result)
    lines += _data_section(result, dataset_card)
    lines += _method_section(result)
    return "\n".join(lines).rstrip() + "\n"


def _summary(result: CVResult) -> list[str]:
    lines = ["## Summary", ""]
    if not result.comparisons:
        lines += ["Only the baseline ran: nothing to compare." if result.baseline
                  else "No baseline among the variants, so no comparison was made.", ""]
        lines += [f"- {v} was skipped: {why}" for v, why in result.skipped.items()]
        return lines + ([""] if result.skipped else [])
    significant_better = [c for c in result.comparisons if c["significant"] and c["diff"] < 0]
    significant_worse = [c for c in result.comparisons if c["significant"] and c["diff"] > 0]
    lines.append(f"{len(significant_better)} of {len(result.comparisons)} (variant, dimension) "
                 f"comparisons lower the baseline's MAE significantly; "
                 f"{len(significant_worse)} raise it significantly.")
    lines.append("")
    lines += [f"- {verdict(c)}" for c in result.comparisons]
    if result.skipped:
        lines.append("")
        lines += [f"- {v} was skipped: {why}" for v, why in result.skipped.items()]
    lines.append("")
    return lines


def _settings_section(result: CVResult) -> list[str]:
    s = result.settings
    d = result.data
    skipped = ", ".join(result.skipped) or "none"
    lines = ["## Settings", "",
             f"- rubric: `{s.get('rubric')}` (sha256 {str(s.get('rubric_sha256'))[:12]})",
             f"- labels: {d.get('labels')} labels of {d.get('items')} items "
             f"(sha256 {str(s.get('labels_sha256'))[:12]})"
             + (f", first {s['limit']} items" if s.get("limit") else ""),
             f"- dimensions: {', '.join(result.dimensions)}",
             f"- variants: {', '.join(result.variants)} (skipped: {skipped})",
             f"- folds: {s.get('folds')} over items, sizes {d.get('fold_sizes')}, "
             f"seed {s.get('seed')}",
             f"- demos per judgment k = {s.get('k')}, demo item budget "
             f"{s.get('demo_input_tokens')} tokens",
             f"- judge LM: `{json.dumps(s.get('lm'))}`",
             f"- reflection LM: `{json.dumps(s.get('reflection_lm'))}`",
             f"- embedder: `{json.dumps(s.get('embedder'))}`",
             f"- bootstrap: {s.get('n_bootstrap')} paired resamples of items, seed "
             f"{s.get('seed')}, {round(100 * s.get('confidence', 0.95))}% percentile CIs",
             ""]
    return lines


def _mae_section(result: CVResult, figure: str | None) -> list[str]:
    lines = ["## Mean absolute error against the baseline", "",
             "Paired over the items both variants scored; change = variant − baseline "
             "(negative: fewer errors).", ""]
    rows = []
    for dim in result.dimensions:
        for v in result.variants:
            c = result.comparison(v, dim)
            if c is None:
                continue
            rows.append([_dim_name(result, dim), v, str(c["n_items_paired"]),
                         f"{_num(c['mae_a'])} → {_num(c['mae_b'])}", _signed(c["diff"]),
                         _ci(c["ci_low"], c["ci_high"]),
                         "yes" if c["significant"] else "no",
                         _pct(c["relative_reduction"])])
    if rows:
        lines += _md_table(["dimension", "variant", "n", "MAE baseline → variant", "change",
                            "95% CI", "significant", "relative error reduction"], rows)
    else:
        lines.append("(no comparison: baseline was not among the variants)")
    lines.append("")
    if figure:
        conf = round(100 * result.settings.get("confidence", 0.95))
        lines += [f"![MAE per dimension and variant, {conf}% bootstrap CIs]({figure})", ""]
    return lines


def _agreement_section(result: CVResult) -> list[str]:
    lines = ["## Agreement with the experts", "",
             "Pooled over the held-out predictions of all folds. MAE, QWK and Spearman use the "
             "items both sides scored; exact and within-one count both-N/A as agreement and an "
             "N/A on one side only as disagreement; failed judgments are excluded and counted.",
             ""]
    rows = []
    for dim in result.dimensions:
        for v in result.variants:
            a = result.agreement[(v, dim)]
            mae = result.mae_of(v, dim) or {}
            rows.append([_dim_name(result, dim), v, str(a.n_items), str(a.n_scored),
                         _num(a.mae), _ci_plain(mae.get("ci_low"), mae.get("ci_high")),
                         _num(a.exact), _num(a.within_one), _num(a.qwk), _num(a.spearman),
                         str(a.n_na_human_only), str(a.n_na_judge_only), str(a.n_both_na),
                         str(a.n_failed)])
    lines += _md_table(["dimension", "variant", "items", "scored", "MAE", "MAE 95% CI",
                        "exact", "within one", "QWK", "Spearman", "N/A human only",
                        "N/A judge only", "both N/A", "failed"], rows)
    lines.append("")
    return lines


def _ci_plain(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _cost_section(result: CVResult) -> list[str]:
    lines = ["## Cost per variant", "",
             "Summed over the folds. Alignment counts every LM call made while compiling "
             "(reflection, bootstrapping); judging counts the held-out judgments.", ""]
    rows = []
    totals = result.cost_totals()
    reused = {v: sum(1 for c in result.costs if c.variant == v and c.reused)
              for v in result.variants}
    for v, t in totals.items():
        rows.append([v, str(int(t["align_calls"])),
                     f"{int(t['align_prompt_tokens'])} + {int(t['align_completion_tokens'])}",
                     f"{t['align_seconds']:.1f}", str(int(t["judge_calls"])),
                     f"{int(t['judge_prompt_tokens'])} + {int(t['judge_completion_tokens'])}",
                     f"{t['judge_seconds']:.1f}", str(reused[v])])
    lines += _md_table(["variant", "align calls", "align tokens (prompt + completion)",
                        "align s", "judge calls", "judge tokens (prompt + completion)",
                        "judge s", "folds reused"], rows)
    lines.append("")
    return lines


def _data_section(result: CVResult, dataset_card: str | None) -> list[str]:
    d = result.data
    lines = ["## Data", "",
             f"{d.get('items')} items, {d.get('labels')} labels, {d.get('raters')} named "
             f"raters; fold sizes {d.get('fold_sizes')}. Expert (aggregated) scores per "
             "dimension:", ""]
    levels = [str(x) for x in result.settings.get("scale", [])] + ["N/A"]
    rows = [[_dim_name(result, dim)] + [str(d.get("reference_scores", {}).get(dim, {})
                                            .get(level, 0)) for level in levels]
            for dim in result.dimensions]
    lines += _md_table(["dimension", *levels], rows)
    lines.append("")
    if dataset_card:
        lines += ["### Data set card", "", dataset_card.strip(), ""]
    return lines


def _method_section(result: CVResult) -> list[str]:
    k = result.settings.get("folds")
    return ["## Method", "",
            f"- {k}-fold cross-validation over items: all dimensions and raters of an item are "
            "in one fold. Items are shuffled with the seed, sorted by mean expert score and "
            "dealt in blocks of K (stratified).",
            "- Each variant is aligned on the other folds only and judges the held-out fold; "
            "after every alignment a guard checks that no held-out item is in the judge's "
            "episodic memory, a guideline's sources or its seen-episode ledger (and stops "
            "the run if one is).",
            f"- `{BASELINE}` is the unaligned judge. Every variant uses the same folds, the "
            "same judge LM, the same k and the same demo budget.",
            "- The expert reference per item is the raters' aggregate (N/A if most say N/A, "
            "else the lower median).",
            "- CIs: paired percentile bootstrap over items; one resample of items serves every "
            "dimension and both variants.",
            ""]


# --- mae.png -----------------------------------------------------------------------------------


def write_figure(result: CVResult, path: str | Path) -> Path:
    """Grouped bars of MAE per dimension (groups) and variant (bars), bootstrap CI whiskers."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dims, variants = result.dimensions, result.variants
    width = 0.8 / max(len(variants), 1)
    bars = len(dims) * max(1, len(variants))
    fig = Figure(figsize=(min(16.0, max(7.0, 2.5 + 0.28 * bars)), 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(dims), dtype=float)
    for n, v in enumerate(variants):
        heights, low, high = [], [], []
        for dim in dims:
            m = result.mae_of(v, dim) or {}
            mae = m.get("mae")
            heights.append(np.nan if mae is None else mae)
            low.append(0.0 if mae is None or m.get("ci_low") is None else mae - m["ci_low"])
            high.append(0.0 if mae is None or m.get("ci_high") is None else m["ci_high"] - mae)
        ax.bar(x + (n - (len(variants) - 1) / 2) * width, np.nan_to_num(heights), width,
               yerr=np.array([low, high]), capsize=3, label=v)
    ax.set_xticks(x)
    ax.set_xticklabels([_dim_name(result, d) for d in dims], rotation=20 if len(dims) > 3 else 0,
                       ha="right" if len(dims) > 3 else "center")
    conf = round(100 * result.settings.get("confidence", 0.95))
    ax.set_ylabel("mean absolute error (scale points)")
    ax.set_title(f"Held-out MAE per dimension ({result.settings.get('folds')}-fold CV, "
                 f"{conf}% bootstrap CIs)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    os.replace(tmp, path)
    return path


__all__ = ["PNG_SIGNATURE", "format_table", "render_markdown", "verdict", "write_figure",
           "write_report"]
