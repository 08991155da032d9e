"""Cross-validate judges on the bundled SQuALITY human feedback: what each memory adds on real
reviewers' scores and comments (issue 14).

Run from the repository root::

    python -m benchmarks.squality_cv                       # first 60 items, 3 dims, K=4
    python -m benchmarks.squality_cv --reflection extractive --variants baseline,memalign
    python -m benchmarks.squality_cv --dry-run             # an instant scripted LM; never writes

Data: ``judgealign.datasets.load_squality()`` (``datasets/squality/DATASET.md``): 300 answers
to questions about 20 stories, rubric ``squality`` (``correctness``, ``selection``,
``overall``, 1-4), three reviewers per answer; inputs ``question``, ``response`` and the
human-written ``reference`` (the story itself is left out: it does not fit the embedded
model's context). The first ``--limit`` items (default 60: 4 stories, 20 questions, each
answered by ``bart``, ``bart-dpr`` and a human) are used, in label order.

Folds keep the answers to one question together (``CVOptions(group_by="reference")``).
The key is ``reference``, not ``question``, because of what the data holds: every question
(a story and question number) has its own reference, shared by its three answers and by no
other item (100 distinct references, 100 groups of exactly 3 items), whereas question texts
repeat across stories ("What is the plot of the story?" is asked of all 20 stories, "Describe
the setting of the story." of 5): grouping by ``question`` would glue 60 unrelated answers
about 20 different stories into one unit and leave 76 units for 100 questions. Answers to
*other* questions about the same story can still sit in training, so retrieval may find an
answer about the same characters. ``group_by="id:^sq-(\\d+)-"`` would keep each story in one
fold (DATASET.md advises it), but the first 36 or 60 items span only 3 or 4 stories, too few
units for K=4; with the whole set (``--limit 300``) it is the better grouping.

``cross_validate`` (K folds over those groups, seed 0) runs the variants ``baseline``
(unaligned), ``semantic-only`` (guidelines only), ``episodic-only`` (retrieved demos only)
and ``memalign`` (both), beside the reference predictors ``constant`` and ``neighbours`` and
the human-vs-human row (each reviewer against the lower median of the other two: the
ceiling). The judge LM is the configured one (``judgealign.toml`` / ``JUDGEALIGN_LM__*``;
default the embedded SmolLM2-135M), the reflection LM ``[reflection_lm]`` or else the judge
LM; memory settings ``k=2, demo_input_tokens=200, item_tokens=600`` (the embedded model's
small context), reflection mode ``--reflection`` (default: the configured one, ``auto``).

Reported per dimension: MAE (failures charged) with its 95% bootstrap CI, failed judgments,
the paired difference to ``baseline`` and to the better reference, the cost; then, per
variant with semantic memory, what reflection did in each fold (modes, guidelines proposed
and kept by mode, reflection and validation calls) and, where the compile reports carry
them, kept guidelines verbatim; then per dimension whether any variant is significantly
worse than ``baseline`` and what semantic memory adds on top of episodic memory
(``memalign - episodic-only``, paired bootstrap).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import command_line, emit, machine_markdown, table  # noqa: E402

SECTION = "squality_cv"
TITLE = "## SQuALITY: what each memory adds on real human feedback (issue 14)"
VARIANTS = ("baseline", "semantic-only", "episodic-only", "memalign")
DIMENSIONS = ("correctness", "selection", "overall")
GROUP_BY = "reference"
# The embedded model's small context: 2 demos of <= 200 tokens, the judged item cut to 600.
MEMORY = {"k": 2, "demo_input_tokens": 200, "item_tokens": 600}
REFLECTION_MODES = ("auto", "cited", "per-example", "extractive")
SHOWN_GUIDELINES = 3


# --- the dry run's scripted LM --------------------------------------------------------------

def _first_comment(prompt: str) -> str | None:
    """The first reviewer comment of a reflection prompt's examples (``"span" -- comment``
    lines of an ``expert rationale:``), or ``None`` when every rationale is empty."""
    for line in re.findall(r"expert rationale: ([^\n]*)", prompt):
        text = line.split(" -- ", 1)[-1].strip()
        if text and text != "(none given)" and len(text.split()) >= 3:
            return text
    return None


def _guideline(comment: str) -> str:
    return f"Check the response against the reference for what reviewers flag: {comment}"[:280]


def scripted_reflection(prompt: str) -> dict[str, Any] | None:
    """A reflection answer for MemAlign's cited (``guidelines``) and per-example
    (``guideline``) prompts, built from a reviewer comment shown in the prompt so that the
    grounding filter can keep it; ``None`` for any other prompt."""
    if "You help align an automatic judge" in prompt:  # DistillGuidelines: cited mode
        cited = []
        for alias, rationale in re.findall(r"\[(E\d+)\] expert score: \S+\n"
                                           r"expert rationale: ([^\n]*)", prompt):
            comment = _first_comment(f"expert rationale: {rationale}")
            if comment:
                cited.append({"text": _guideline(comment), "sources": [alias]})
        return {"guidelines": cited[:2]}
    if "Write one short rule" in prompt:  # WriteGuideline: per-example mode
        comment = _first_comment(prompt)
        return {"guideline": _guideline(comment) if comment else
                "Compare the names and events of the response with the reference."}
    return None


def scripted_lm_answer(prompt: str) -> Any:
    """``--dry-run``'s instant LM: reflection prompts get guidelines, every other prompt
    (judging, validation, calibration features) the scripted judge of
    :mod:`benchmarks.calibration`."""
    from benchmarks.calibration import scripted_judge

    answer = scripted_reflection(prompt)
    return answer if answer is not None else scripted_judge(prompt)


# --- the section ----------------------------------------------------------------------------

def _ci(low: Any, high: Any) -> str:
    return "n/a" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _diff(comp: dict[str, Any] | None, *, name: bool = False) -> str:
    if comp is None or comp.get("diff") is None:
        return "—"
    text = f"{comp['diff']:+.2f} {_ci(comp['ci_low'], comp['ci_high'])}" + (
        " *" if comp.get("significant") else "")
    return f"{comp['reference']}: {text}" if name and comp.get("reference") else text


def results_table(result: Any) -> str:
    costs = result.cost_totals()
    rows = []
    for dim in result.dimensions:
        for row in result.rows:
            m = result.mae_of(row, dim)
            if m is None:
                continue
            if row in result.variants:
                label = row
                vs_base = "—" if row == "baseline" else _diff(result.comparison(row, dim))
                vs_ref = _diff(result.comparison(row, dim, against="reference"), name=True)
                c = costs.get(row)
                cost = "—" if c is None else (
                    f"{int(c['align_calls'])} + {int(c['judge_calls'])} calls, "
                    f"{c['align_seconds'] + c['judge_seconds']:.0f} s")
            else:
                label = (f"{row} (reference)" if row in result.references else
                         f"human vs human (ceiling, {m.get('n_pairs', m['n'])} pairs)")
                vs_base = vs_ref = "—"
                cost = "0 (no LM)"
            rows.append([dim, label, f"{m['mae']:.2f}", _ci(m["ci_low"], m["ci_high"]),
                         str(m["n_failed"]), vs_base, vs_ref, cost])
    return table(["dimension", "row", "MAE", "95% CI", "failed",
                  "Δ vs baseline [95% CI] (* significant)",
                  "Δ vs better reference [95% CI]", "cost (align + judge calls, seconds)"],
                 rows)


def _modes(counts: dict[str, Any] | None) -> str:
    return ", ".join(f"{m} {n}" for m, n in (counts or {}).items() if n) or "0"


def _shown_guidelines(d: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Kept guideline texts of a dimension report, if the report carries any (``None``: it
    has no such field)."""
    for key in ("guidelines", "kept_guidelines"):
        if isinstance(d.get(key), list):
            return [g if isinstance(g, dict) else {"text": str(g)} for g in d[key]]
    return None


def semantic_markdown(result: Any, variants: Sequence[str]) -> str:
    """What reflection did per variant with semantic memory, dimension and fold."""
    if not variants:
        return "No variant with semantic memory ran: no guideline was distilled."
    rows, totals, shown = [], {}, {}
    carried = False
    for variant in variants:
        for (v, fold), report in sorted(result.align_reports.items()):
            if v != variant:
                continue
            for d in report.get("dimensions") or []:
                dim = d["dimension"]
                if dim not in result.dimensions:
                    continue
                rejected = ", ".join(f"{r} {n}" for r, n in sorted(
                    (d.get("rejected") or {}).items())) or "—"
                rows.append([variant, dim, fold, " → ".join(d.get("modes") or []) or "—",
                             d.get("proposed", 0), d.get("kept", 0),
                             _modes(d.get("kept_by_mode")), rejected,
                             d.get("reflection_calls", 0), d.get("validation_calls", 0),
                             d.get("unvalidated", 0)])
                tot = totals.setdefault((variant, dim), {})
                for mode, n in (d.get("kept_by_mode") or {}).items():
                    tot[mode] = tot.get(mode, 0) + n
                texts = _shown_guidelines(d)
                if texts is not None:
                    carried = True
                    bucket = shown.setdefault((variant, dim), [])
                    for g in texts:
                        if len(bucket) < SHOWN_GUIDELINES and g.get("text") not in {
                                b.get("text") for b in bucket}:
                            bucket.append({**g, "fold": fold})
    parts = ["Semantic memory per fold: reflection modes that ran (in order), guidelines "
             "proposed, kept (new in this compile, after grounding, de-duplication and "
             "validation) and by which mode, rejections by reason, reflection LM calls, "
             "validation judge calls, kept guidelines validation did not reach.",
             table(["variant", "dimension", "fold", "modes", "proposed", "kept", "kept by mode",
                    "rejected", "reflection calls", "validation calls", "unvalidated"], rows),
             "Kept over all folds: " + "; ".join(
                 f"{v} / {dim}: {_modes(t)}" for (v, dim), t in totals.items()) + "."]
    if not carried:
        parts.append("The compile reports (`result.align_reports`, MemAlign's "
                     "`DimensionReport`) carry counts only, not the guideline texts, so no "
                     "guideline is quoted here.")
    else:
        lines = []
        for (v, dim), gs in shown.items():
            for g in gs:
                sources = ", ".join(g.get("sources") or []) or "—"
                text = " ".join(str(g.get("text", "")).split())
                lines.append(f"- {v} / {dim} (fold {g['fold']}, {g.get('mode', '?')}; "
                             f"sources {sources}): {text}")
        parts.append(f"Up to {SHOWN_GUIDELINES} kept guidelines per variant and dimension, "
                     "verbatim:\n\n" + ("\n".join(lines) or "(none kept)"))
    return "\n\n".join(parts)


def checks_markdown(result: Any, levels: Sequence[int], n_boot: int) -> str:
    from benchmarks.calibration import paired

    lines = []
    for dim in result.dimensions:
        if "baseline" in result.variants:
            worse = [f"{v} {_diff(result.comparison(v, dim))}" for v in result.variants
                     if v != "baseline" and (c := result.comparison(v, dim)) is not None
                     and c.get("significant") and (c.get("diff") or 0) > 0]
            lines.append(f"- {dim}: " + (
                "**significantly worse than baseline**: " + "; ".join(worse) if worse else
                "no variant is significantly worse than baseline") + ".")
        if {"memalign", "episodic-only"} <= set(result.variants):
            d = paired(result, "episodic-only", "memalign", dim, levels, n_boot)
            verdict = ("no significant difference" if not d["significant"] else
                       "semantic memory helps significantly" if d["diff"] < 0 else
                       "semantic memory hurts significantly")
            lines.append(f"- {dim}: what semantic memory adds, memalign − episodic-only: "
                         f"{d['diff']:+.2f} {_ci(d['ci_low'], d['ci_high'])} ({verdict}).")
    return "\n".join(lines) or "(no comparison: baseline and the memory variants did not run)"


def data_line(labels: Any, result: Any, args: argparse.Namespace, settings: Any) -> str:
    from judgealign.evaluation.folds import content_groups
    from judgealign.items import estimate_tokens

    ids = sorted(result.folds)
    items = labels.items()
    groups = content_groups(ids, labels.subset(ids), group_by=GROUP_BY)
    stories = {i.split("-")[1] for i in ids}
    cut = sum(1 for i in ids if sum(estimate_tokens(items[i].get(name) or "") for name in
                                    ("question", "response", "reference"))
              > MEMORY["item_tokens"])
    mem = settings.memory
    return (f"Data: `load_squality()`, first {args.limit} items in label order "
            f"({result.data.get('items')} items, {result.data.get('labels')} labels, "
            f"{len(stories)} stories, {len(groups)} questions; "
            f"{result.data.get('raters')} reviewers in all, 3 per item), dimensions "
            f"{', '.join(result.dimensions)}, scale 1-4. K={result.settings['folds']} folds "
            f"(seed 0, sizes {result.data.get('fold_sizes')}) grouped by `{GROUP_BY}`: the "
            "three answers to a question share a fold (answers to other questions about the "
            "same story may be in training). Memory settings k={k}, demo_input_tokens={d}, "
            "item_tokens={t} (the embedded model's small context; {cut} of {n} items exceed "
            "{t} estimated tokens and are cut); reflection `{refl}`, validation budget {vb} "
            "judge calls per dimension and fold, score policy `{pol}`; {boot:,} bootstrap "
            "resamples. MAE charges failures; Δ is the row minus baseline or the better "
            "reference, negative = fewer errors.").format(
        k=mem.k, d=mem.demo_input_tokens, t=mem.item_tokens, cut=cut, n=len(ids),
        refl=mem.reflection, vb=mem.validation_budget, pol=settings.scoring.policy,
        boot=args.bootstrap)


# --- main -----------------------------------------------------------------------------------

def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="first N items (default 60)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--bootstrap", type=int, default=10_000)
    parser.add_argument("--dims", default=",".join(DIMENSIONS),
                        help=f"comma-separated (default {','.join(DIMENSIONS)})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated (default {','.join(VARIANTS)})")
    parser.add_argument("--reflection", choices=REFLECTION_MODES, default=None,
                        help="MemAlign's reflection mode (default: the configured one)")
    parser.add_argument("--validation-budget", type=int, default=None,
                        help="judge calls for guideline validation per dimension and fold "
                             "(default: the configured one)")
    parser.add_argument("--policy", choices=("sampled", "expected", "calibrated"), default=None,
                        help="score policy of every variant (default: the configured one); "
                             "calibrated adds one judgment per training item, dimension and "
                             "fold")
    parser.add_argument("--dry-run", action="store_true",
                        help="an instant scripted LM; never writes BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--out", default=None, help="also write the CV report here")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.validation_budget is not None and args.validation_budget < 0:
        parser.error("--validation-budget must be >= 0")
    dims, variants = _names(args.dims), _names(args.variants)
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown or not dims:
        parser.error(f"--dims: unknown {unknown}; known: {', '.join(DIMENSIONS)}")
    warnings.simplefilter("ignore")

    from judgealign import build
    from judgealign.datasets import load_squality
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.options import CVOptions, CVOptionsError
    from judgealign.evaluation.report import write_report
    from judgealign.evaluation.variants import uses_reflection
    from judgealign.lm import lm_identity

    memory: dict[str, Any] = dict(MEMORY)
    if args.reflection is not None:
        memory["reflection"] = args.reflection
    if args.validation_budget is not None:
        memory["validation_budget"] = args.validation_budget
    overrides: dict[str, Any] = {"memory": memory}
    if args.policy is not None:
        overrides["scoring"] = {"policy": args.policy}
    settings = build.settings_from(None, overrides=overrides)
    try:
        options = CVOptions(variants=tuple(variants), folds=args.folds, seed=0,
                            dimensions=tuple(dims), limit=args.limit,
                            n_bootstrap=args.bootstrap, progress=True, group_by=GROUP_BY)
    except CVOptionsError as exc:
        parser.error(str(exc))
    if args.dry_run:
        import dspy
        import litellm

        from judgealign.testing import scripted_lm

        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        litellm.suppress_debug_info = True  # its "Provider List" note on the unknown model
        lm = scripted_lm(scripted_lm_answer, name="scripted/dry-run")
        reflection_lm = lm  # never build a configured [reflection_lm] in a dry run
    else:
        lm = build.judge_lm(settings)
        reflection_lm = None  # cross_validate builds [reflection_lm], else uses the judge LM
    data = load_squality()
    start = time.perf_counter()
    result = cross_validate(data.rubric, data.labels, settings, options, lm=lm,
                            reflection_lm=reflection_lm)
    seconds = time.perf_counter() - start
    if args.out:
        write_report(result, Path(args.out),
                     dataset_card=data.card.read_text(encoding="utf-8"))

    levels = list(data.rubric.scale)
    semantic = [v for v in result.variants if uses_reflection(settings, v)]
    ident = " ".join(f"{k}={v}" for k, v in lm_identity(lm).items() if k != "model_sha256")
    refl = result.settings.get("reflection_lm") or {}
    refl_name = ("none (no variant distils guidelines)" if not semantic else
                 "the judge LM" if refl.get("model") == lm_identity(lm)["model"] else
                 f"`{refl.get('model')}`")
    skipped = "".join(f" Skipped: {v} ({why})." for v, why in result.skipped.items())
    markdown = "\n\n".join([
        TITLE,
        f"Command: `{command_line('benchmarks.squality_cv', argv)}` — variants "
        f"{', '.join(result.variants)}, the references {', '.join(result.references)} and "
        f"the human-vs-human ceiling; reflection LM: {refl_name}.{skipped}",
        data_line(data.labels, result, args, settings),
        results_table(result),
        semantic_markdown(result, semantic),
        checks_markdown(result, levels, args.bootstrap),
        f"Wall time of the cross-validation: {seconds:.0f} s.",
        machine_markdown(lm=ident),
    ])
    emit(SECTION, markdown, write=not (args.no_write or args.dry_run))


if __name__ == "__main__":
    main()
