"""The report of a cross-validation: ``results.json``, ``report.md`` and ``mae.png``.

``results.json`` holds everything, every held-out score included, so that any number or
figure of the report can be recomputed from it. ``report.md`` says per dimension whether each
variant lowers the baseline's mean absolute error and whether it beats the better reference
predictor (``constant``: the training median; ``neighbours``: the labels of the nearest
training items), with paired bootstrap 95% CIs, and gives the human-vs-human ceiling, the
agreement metrics, failures, costs and a summary of the data. The headline MAE charges
failures and N/A mismatches (:mod:`judgealign.evaluation.metrics`). ``mae.png`` draws the MAE
per dimension and row with bootstrap CIs as error bars.

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

from judgealign.evaluation.options import BASELINE, CONSTANT, HUMAN, NEIGHBOURS
from judgealign.evaluation.results import AGAINST_BASELINE, AGAINST_REFERENCE, CVResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# How each reference predictor is said in a sentence.
REFERENCE_WORDS = {CONSTANT: "predicting the training median",
                   NEIGHBOURS: "copying the labels of the nearest training items"}
# Grey, hatched bars tell the references apart from the coloured LLM variants.
REFERENCE_STYLES: dict[str, dict[str, Any]] = {
    CONSTANT: {"hatch": "//", "color": "0.8", "edgecolor": "0.35"},
    NEIGHBOURS: {"hatch": "\\\\", "color": "0.6", "edgecolor": "0.2"},
}
CHARGE_NOTE = ("failures charged: a failed judgment, or N/A where the expert gave level h, "
               "costs max(h − lowest, highest − h); a level or a failure where the expert said "
               "N/A costs the width of the scale")


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


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if _missing(value) else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 2) -> str:
    return "–" if _missing(value) else f"{value:+.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if _missing(value) else f"{100 * value:.0f}%"


def _ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "–"
    return f"[{low:+.2f}, {high:+.2f}]"


def _ci_plain(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _dim_name(result: CVResult, dim: str) -> str:
    return result.settings.get("dimension_names", {}).get(dim, dim)


def _sig(comp: dict[str, Any] | None) -> str:
    return "" if comp is None else "yes" if comp["significant"] else "no"


def verdict(comparison: dict[str, Any]) -> str:
    """One sentence on a comparison record: does the variant lower the MAE of what it is
    compared with (the baseline, or the better reference)?"""
    v, dim = comparison["variant"], comparison["dimension"]
    ref = comparison.get("reference", BASELINE)
    a, b, diff = comparison["mae_a"], comparison["mae_b"], comparison["diff"]
    if a is None or b is None or diff is None:
        return f"{v} vs {ref} on {dim}: no item was judged by both, nothing to compare."
    conf = round(100 * comparison["confidence"])
    ci = _ci(comparison["ci_low"], comparison["ci_high"])
    if comparison["significant"]:
        tail = f"significant (the {conf}% CI {ci} excludes 0)"
    else:
        tail = f"not significant (the {conf}% CI {ci} includes 0)"
    n = comparison["n_items_paired"]
    if ref == BASELINE:
        if diff == 0:
            return f"{v} leaves the MAE on {dim} unchanged at {a:.2f} (n={n}): {tail}."
        verb = "lowers" if diff < 0 else "raises"
        rel = comparison["relative_reduction"]
        change = ("" if rel is None else f", {_pct(rel)} error reduction" if rel >= 0
                  else f", {_pct(-rel)} more error")
        return (f"{v} {verb} the MAE on {dim} from {a:.2f} to {b:.2f} ({diff:+.2f}{change}, "
                f"n={n}): {tail}.")
    relation = "beats" if diff < 0 else "loses to" if diff > 0 else "ties with"
    return (f"{v} {relation} the {ref} reference on {dim}: MAE {b:.2f} vs {a:.2f} "
            f"({diff:+.2f}, n={n}): {tail}.")


def reference_warnings(result: CVResult) -> list[str]:
    """One line per dimension where the best LLM variant (lowest headline MAE) is not
    significantly better than the better reference predictor."""
    lines = []
    for dim in result.dimensions:
        ref = result.best_reference.get(dim)
        scored = [(m["mae"], n, m["variant"]) for n, m in enumerate(result.mae)
                  if m["dimension"] == dim and m["kind"] == "variant" and m["mae"] is not None]
        if ref is None or not scored:
            continue
        best = min(scored)[2]
        comp = result.comparison(best, dim, AGAINST_REFERENCE)
        if comp is None or (comp["significant"] and comp["diff"] is not None
                            and comp["diff"] < 0):
            continue
        words = REFERENCE_WORDS.get(ref, f"the {ref} reference")
        lines.append(f"warning: the judge does not beat {words} on {_dim_name(result, dim)}: "
                     f"best variant {best} MAE {_num(comp['mae_b'])} vs {ref} "
                     f"{_num(comp['mae_a'])}, difference {_signed(comp['diff'])} "
                     f"{_ci(comp['ci_low'], comp['ci_high'])}")
    return lines


# --- the terminal table ------------------------------------------------------------------------


def format_table(result: CVResult) -> str:
    """The results as a plain-text table with aligned columns, one row per dimension x row
    (variants, references, human): n, the headline MAE (failures charged) with its 95% CI,
    failures, MAE over scored items, the change against baseline and against the better
    reference with paired 95% CIs and significance, exact agreement and QWK."""
    head = ["dimension", "variant", "n", "MAE*", "MAE 95% CI", "failed", "MAE scored",
            "vs base", "95% CI", "sig", "vs ref", "ref", "95% CI", "sig", "exact", "QWK"]
    rows = [head]
    for dim in result.dimensions:
        for v in result.rows:
            a = result.agreement.get((v, dim))
            m = result.mae_of(v, dim)
            if a is None or m is None:
                continue
            base = result.comparison(v, dim, AGAINST_BASELINE)
            ref = result.comparison(v, dim, AGAINST_REFERENCE)
            rows.append([
                dim, v, str(m["n"]), _num(m["mae"]), _ci_plain(m["ci_low"], m["ci_high"]),
                str(a.n_failed), _num(a.mae_scored),
                _signed(base["diff"]) if base else "",
                _ci(base["ci_low"], base["ci_high"]) if base else "", _sig(base),
                _signed(ref["diff"]) if ref else "", ref["reference"] if ref else "",
                _ci(ref["ci_low"], ref["ci_high"]) if ref else "", _sig(ref),
                _num(a.exact), _num(a.qwk)])
    table = _align(rows, right_from=2)
    return table + f"\n* MAE: {CHARGE_NOTE}."


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


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: header, rule, one line per row."""
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
    lines += _comparison_sections(result)
    lines += _agreement_section(result)
    lines += _cost_section(result)
    lines += _data_section(result, dataset_card)
    lines += _method_section(result)
    return "\n".join(lines).rstrip() + "\n"


def _summary(result: CVResult) -> list[str]:
    lines = ["## Summary", ""]
    warnings = reference_warnings(result)
    if warnings:
        lines += [f"- **{w[0].upper()}{w[1:]}.**" for w in warnings] + [""]
    vs_base = [c for c in result.comparisons if c["against"] == AGAINST_BASELINE]
    vs_ref = [c for c in result.comparisons if c["against"] == AGAINST_REFERENCE]
    if not vs_base:
        lines += ["Only the baseline ran: nothing to compare with it." if result.baseline
                  else "No baseline among the variants, so no comparison with it was made.", ""]
    else:
        better = [c for c in vs_base if c["significant"] and c["diff"] < 0]
        worse = [c for c in vs_base if c["significant"] and c["diff"] > 0]
        lines.append(f"{len(better)} of {len(vs_base)} (variant, dimension) comparisons lower "
                     f"the baseline's MAE significantly; {len(worse)} raise it significantly.")
        lines.append("")
        lines += [f"- {verdict(c)}" for c in vs_base]
        lines.append("")
    if vs_ref:
        beat = [c for c in vs_ref if c["significant"] and c["diff"] < 0]
        lines.append(f"{len(beat)} of {len(vs_ref)} (variant, dimension) comparisons beat the "
                     "better reference predictor significantly.")
        lines.append("")
        lines += [f"- {verdict(c)}" for c in vs_ref]
        lines.append("")
    if result.has_human:
        for dim in result.dimensions:
            m = result.mae_of(HUMAN, dim)
            if m is not None:
                lines.append(f"- Human vs human on {_dim_name(result, dim)}: MAE "
                             f"{_num(m['mae'])} {_ci_plain(m['ci_low'], m['ci_high'])} over "
                             f"{m['n']} items with several raters (the ceiling).")
        lines.append("")
    if result.skipped:
        lines += [f"- {v} was skipped: {why}" for v, why in result.skipped.items()] + [""]
    return lines


def _settings_section(result: CVResult) -> list[str]:
    s = result.settings
    d = result.data
    skipped = ", ".join(result.skipped) or "none"
    refs = ", ".join(result.references) or "none (switched off)"
    lines = ["## Settings", "",
             f"- rubric: `{s.get('rubric')}` (sha256 {str(s.get('rubric_sha256'))[:12]})",
             f"- labels: {d.get('labels')} labels of {d.get('items')} items "
             f"(sha256 {str(s.get('labels_sha256'))[:12]})"
             + (f", first {s['limit']} items" if s.get("limit") else ""),
             f"- dimensions: {', '.join(result.dimensions)}",
             f"- variants: {', '.join(result.variants)} (skipped: {skipped})",
             f"- reference predictors: {refs}",
             f"- folds: {s.get('folds')} over items, sizes {d.get('fold_sizes')}, "
             f"seed {s.get('seed')}"
             + (f"; items with the same `{s['group_by']}` kept in one fold"
                if s.get("group_by") else ""),
             f"- demos per judgment k = {s.get('k')}, demo item budget "
             f"{s.get('demo_input_tokens')} tokens",
             f"- judge LM: `{json.dumps(s.get('lm'))}`",
             f"- reflection LM: `{json.dumps(s.get('reflection_lm'))}`",
             f"- embedder: `{json.dumps(s.get('embedder'))}`",
             f"- bootstrap: {s.get('n_bootstrap')} paired resamples of items, seed "
             f"{s.get('seed')}, {round(100 * s.get('confidence', 0.95))}% percentile CIs",
             *_policy_lines(result),
             *_mode_lines(result),
             ""]
    return lines


def _policy_lines(result: CVResult) -> list[str]:
    """The score policy of each variant (issue 13) and the calibrations its folds fitted."""
    configured = ((result.settings.get("config") or {}).get("scoring") or {}).get("policy")
    if configured is None:
        return []
    parts = []
    for v in result.variants:
        reports = [r for (var, _), r in sorted(result.align_reports.items()) if var == v]
        policy = next((p for r in reports if (p := (r.get("settings") or {}).get("policy"))),
                      configured)
        kinds: dict[str, int] = {}
        for r in reports:
            for d in r.get("dimensions") or []:
                if d.get("calibration"):
                    kind = d["calibration"]["kind"]
                    kinds[kind] = kinds.get(kind, 0) + 1
        if kinds:
            fitted = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            parts.append(f"{v} {policy} (calibrations per dimension and fold: {fitted})")
        elif policy == "calibrated":
            parts.append(f"{v} calibrated (nothing fitted: scored as expected)")
        else:
            parts.append(f"{v} {policy}")
    return [f"- score policy: {'; '.join(parts)}"] if parts else []


def _mode_lines(result: CVResult) -> list[str]:
    """How each variant's judge calls the LM (issue 15): per dimension or one joint call."""
    from judgealign.build import VARIANTS

    scoring = (result.settings.get("config") or {}).get("scoring") or {}
    configured = scoring.get("mode")
    if configured is None:
        return []
    layout = scoring.get("layout", "item-first")
    parts = []
    for v in result.variants:
        mode = ((VARIANTS.get(v) or {}).get("scoring") or {}).get("mode", configured)
        parts.append(f"{v} one call per item (joint)" if mode == "joint"
                     else f"{v} one call per dimension ({layout} layout)")
    return [f"- judging: {'; '.join(parts)}"]


def _kind_label(result: CVResult, row: str) -> str:
    if row in result.references:
        return f"{row} (reference)"
    if row == HUMAN:
        return "human vs human (ceiling)"
    return row


def _mae_section(result: CVResult, figure: str | None) -> list[str]:
    conf = round(100 * result.settings.get("confidence", 0.95))
    lines = ["## Mean absolute error (failures charged)", "",
             f"Over ALL held-out items, {CHARGE_NOTE}. The last column is the plain MAE over "
             "the items both sides scored, for comparison only. References need no LM; "
             "human vs human is each rater against the other raters' aggregate.", ""]
    rows = []
    for dim in result.dimensions:
        for v in result.rows:
            m = result.mae_of(v, dim)
            if m is None:
                continue
            rows.append([_dim_name(result, dim), _kind_label(result, v), str(m["n"]),
                         _num(m["mae"]), _ci_plain(m["ci_low"], m["ci_high"]),
                         str(m["n_failed"]), _num(m["mae_scored"])])
    lines += md_table(["dimension", "row", "n", "MAE (failures charged)", f"MAE {conf}% CI",
                        "failed", "MAE over scored items only"], rows)
    lines.append("")
    if figure:
        lines += [f"![MAE per dimension and row, {conf}% bootstrap CIs]({figure})", ""]
    return lines


def _comparison_sections(result: CVResult) -> list[str]:
    lines = ["## Against the baseline", "",
             "Paired over all items; change = variant − baseline (negative: fewer errors).", ""]
    rows = []
    for dim in result.dimensions:
        for v in result.variants:
            c = result.comparison(v, dim, AGAINST_BASELINE)
            if c is None:
                continue
            rows.append([_dim_name(result, dim), v, str(c["n_items_paired"]),
                         f"{_num(c['mae_a'])} → {_num(c['mae_b'])}", _signed(c["diff"]),
                         _ci(c["ci_low"], c["ci_high"]), _sig(c),
                         _pct(c["relative_reduction"])])
    if rows:
        lines += md_table(["dimension", "variant", "n", "MAE baseline → variant", "change",
                            "95% CI", "significant", "relative error reduction"], rows)
    else:
        lines.append("(no comparison: baseline was not among the variants)")
    lines += ["", "## Against the better reference predictor", "",
              "Per dimension the reference (constant or neighbours) with the lower MAE; "
              "change = variant − reference (negative: the judge errs less than the "
              "reference).", ""]
    rows = []
    for dim in result.dimensions:
        for v in result.variants:
            c = result.comparison(v, dim, AGAINST_REFERENCE)
            if c is None:
                continue
            rows.append([_dim_name(result, dim), v, c["reference"], str(c["n_items_paired"]),
                         f"{_num(c['mae_a'])} → {_num(c['mae_b'])}", _signed(c["diff"]),
                         _ci(c["ci_low"], c["ci_high"]), _sig(c)])
    if rows:
        lines += md_table(["dimension", "variant", "reference", "n", "MAE reference → variant",
                            "change", "95% CI", "significant"], rows)
    else:
        lines.append("(no comparison: the reference predictors were switched off)")
    lines.append("")
    return lines


def _agreement_section(result: CVResult) -> list[str]:
    lines = ["## Agreement with the experts", "",
             "Pooled over the held-out predictions of all folds (human vs human: over every "
             "rater-vs-others pair). MAE charges failures and N/A mismatches; QWK and Spearman "
             "use the items both sides scored; exact and within-one count both-N/A as "
             "agreement, an N/A on one side only as disagreement, and leave failures out.", ""]
    rows = []
    for dim in result.dimensions:
        for v in result.rows:
            a = result.agreement.get((v, dim))
            if a is None:
                continue
            rows.append([_dim_name(result, dim), _kind_label(result, v), str(a.n_items),
                         str(a.n_scored), _num(a.mae), _num(a.mae_scored), _num(a.exact),
                         _num(a.within_one), _num(a.qwk), _num(a.spearman),
                         str(a.n_na_human_only), str(a.n_na_judge_only), str(a.n_both_na),
                         str(a.n_failed)])
    lines += md_table(["dimension", "row", "items", "scored", "MAE (failures charged)",
                        "MAE scored only", "exact", "within one", "QWK", "Spearman",
                        "N/A human only", "N/A judge only", "both N/A", "failed"], rows)
    lines.append("")
    return lines


def _cost_section(result: CVResult) -> list[str]:
    lines = ["## Cost per variant", "",
             "Summed over the folds. Alignment counts every LM call made while compiling "
             "(reflection, bootstrapping); judging counts the held-out judgments. Reference "
             "predictors make no LM call. Cached: of the prompt tokens, those the provider "
             "reported serving from its prompt cache (0 where it reports none).", ""]
    rows = []
    totals = result.cost_totals()
    reused = {v: sum(1 for c in result.costs if c.variant == v and c.reused)
              for v in result.variants}
    for v, t in totals.items():
        rows.append([v, str(int(t["align_calls"])),
                     f"{int(t['align_prompt_tokens'])} + {int(t['align_completion_tokens'])}",
                     f"{t['align_seconds']:.1f}", str(int(t["judge_calls"])),
                     f"{int(t['judge_prompt_tokens'])} + {int(t['judge_completion_tokens'])}",
                     f"{t['judge_seconds']:.1f}",
                     f"{int(t.get('align_cached_prompt_tokens', 0))} + "
                     f"{int(t.get('judge_cached_prompt_tokens', 0))}", str(reused[v])])
    lines += md_table(["variant", "align calls", "align tokens (prompt + completion)",
                        "align s", "judge calls", "judge tokens (prompt + completion)",
                        "judge s", "cached prompt tokens (align + judge)", "folds reused"],
                      rows)
    lines.append("")
    return lines


def _data_section(result: CVResult, dataset_card: str | None) -> list[str]:
    d = result.data
    multi = d.get("multi_rater_items", {})
    lines = ["## Data", "",
             f"{d.get('items')} items, {d.get('labels')} labels, {d.get('raters')} named "
             f"raters; fold sizes {d.get('fold_sizes')}. Expert (aggregated) scores per "
             "dimension, and items with several raters:", ""]
    levels = [str(x) for x in result.settings.get("scale", [])] + ["N/A"]
    rows = [[_dim_name(result, dim)] + [str(d.get("reference_scores", {}).get(dim, {})
                                            .get(level, 0)) for level in levels]
            + [str(multi.get(dim, 0))] for dim in result.dimensions]
    lines += md_table(["dimension", *levels, "items with ≥ 2 raters"], rows)
    lines.append("")
    if dataset_card:
        lines += ["### Data set card", "", dataset_card.strip(), ""]
    return lines


def _method_section(result: CVResult) -> list[str]:
    s = result.settings
    k = s.get("folds")
    scale = s.get("scale") or [0, 1]
    lo, hi = min(scale), max(scale)
    return ["## Method", "",
            f"- {k}-fold cross-validation over items: all dimensions and raters of an item are "
            "in one fold, and items with identical inputs share a fold. Items are shuffled "
            "with the seed, sorted by mean expert score and dealt in blocks of K (stratified).",
            "- Each variant is built and aligned on the other folds only, exactly as `align` "
            "would with the variant's settings, and judges the held-out fold; after every "
            "alignment a guard checks that no held-out item is in the judge's episodic "
            "memory, a guideline's sources or its seen-episode ledger (and stops the run if "
            "one is).",
            f"- `{BASELINE}` is the unaligned judge. Every variant uses the same folds, the "
            "same judge LM, the same k and the same demo budget.",
            "- The expert reference per item is the raters' aggregate (N/A if most say N/A, "
            "else the lower median).",
            f"- Failures count. On this scale ({lo}–{hi}) a failed judgment, or an N/A where "
            f"the expert gave level h, is charged max(h − {lo}, {hi} − h), the largest error "
            "any level could have made, so failing or abstaining on hard items never looks "
            f"better than answering; a level (or a failure) where the expert said N/A is "
            f"charged {hi - lo}, the width of the scale; both N/A costs 0. The headline MAE "
            "is the mean charge over all items; the MAE over scored items only is secondary.",
            f"- Reference predictors, fitted on each fold's training items only (checked by "
            f"the same guard), no LM call: `{CONSTANT}` predicts the training items' "
            "aggregate score per dimension (lower median; N/A if most are N/A); "
            f"`{NEIGHBOURS}` the aggregate of the k = {s.get('k')} training items nearest to "
            "the held-out item by the judge's embedder. A judge that does not beat the better "
            "of the two adds nothing over its training labels.",
            "- Human vs human (items with at least 2 raters): each rater against the aggregate "
            "of the other raters of the item, charged the same way; an item's error is the "
            "mean over its raters, n counts items. It is the ceiling a judge can reach.",
            "- CIs: paired percentile bootstrap over items on the charged errors of all items; "
            "one resample of items serves every dimension and row.",
            ""]


# --- mae.png -----------------------------------------------------------------------------------


def write_figure(result: CVResult, path: str | Path) -> Path:
    """Grouped bars of the headline MAE per dimension (groups) and row (bars: variants, then
    the hatched reference predictors and human-vs-human ceiling), bootstrap CI whiskers."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dims, rows = result.dimensions, result.rows
    width = 0.8 / max(len(rows), 1)
    bars = len(dims) * max(1, len(rows))
    fig = Figure(figsize=(min(16.0, max(7.0, 2.5 + 0.28 * bars)), 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(dims), dtype=float)
    for n, v in enumerate(rows):
        heights, low, high = [], [], []
        for dim in dims:
            m = result.mae_of(v, dim) or {}
            mae = m.get("mae")
            heights.append(np.nan if mae is None else mae)
            low.append(0.0 if mae is None or m.get("ci_low") is None else mae - m["ci_low"])
            high.append(0.0 if mae is None or m.get("ci_high") is None else m["ci_high"] - mae)
        style: dict[str, Any] = {}
        if v in result.references:
            style = REFERENCE_STYLES.get(v, {"hatch": "xx", "color": "0.85", "edgecolor": "0.3"})
        elif v == HUMAN:
            style = {"hatch": "..", "color": "white", "edgecolor": "0.2"}
        ax.bar(x + (n - (len(rows) - 1) / 2) * width, np.nan_to_num(heights), width,
               yerr=np.array([low, high]), capsize=3, label=_kind_label(result, v), **style)
    ax.set_xticks(x)
    ax.set_xticklabels([_dim_name(result, d) for d in dims], rotation=20 if len(dims) > 3 else 0,
                       ha="right" if len(dims) > 3 else "center")
    conf = round(100 * result.settings.get("confidence", 0.95))
    ax.set_ylabel("MAE, failures charged (scale points)")
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


__all__ = ["PNG_SIGNATURE", "format_table", "md_table", "reference_warnings", "render_markdown",
           "verdict", "write_figure", "write_report"]
