"""The ``judgealign cv`` and ``judgealign demo`` commands.

``cv`` cross-validates alignment of any rubric on any label file. ``demo`` is the main job:
cross-validated alignment of the bundled notebook judge (``judgealign.datasets``'
``ml_notebooks``) on the configured LM, by default the embedded SmolLM2-135M.

The default demo is a documented subset sized for 2 CPU cores: the dimensions
``model_training`` and ``data_imputation``, the first 16 items, 4 folds, variants ``baseline``
and ``memalign`` (both memories; ``DEFAULT_VARIANTS``, as for ``cv``), 10,000 bootstrap
resamples, short prompts (``DEMO_MEMORY``) and, unless the configuration says otherwise
(:func:`demo_settings`), joint judging (one call per item for both dimensions) and, with the
embedded model as the reflection LM, extractive guidelines (no reflection call) without
held-out validation. The reference predictors ``constant`` and ``neighbours`` (no LM call) are
in every report unless ``args.no_references`` is set. ``--full`` runs every dimension and every
item, whole, with the same variants and the same defaults for what the configuration leaves
unset, but the configured memory settings (no prompt cuts; with the embedded judge, at most
two guidelines per dimension, so the joint prompt fits its context). ``--dimensions``,
``--limit`` and ``--variants`` override either (``--variants
baseline,memalign,semantic-only,episodic-only``: the ablations). ``--group-by FIELD`` keeps
the items that share a value of that rubric input (e.g. ``question``) in one fold.

Checkpoints go to ``--out``; ``--resume`` reuses the (fold, variant) runs already finished
there with the same settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judgealign.evaluation.options import REFERENCES, CVOptions

DEMO_DIMENSIONS = ("model_training", "data_imputation")
DEMO_ITEMS = 16
# The default demo's prompt budget: the 135M model reads ~100 tokens/s on 2 cores, so short
# prompts are what makes the subset finish in minutes (``--full`` keeps the configured ones).
DEMO_MEMORY = {"k": 2, "demo_input_tokens": 200, "item_tokens": 600, "batch_examples": 6}
DEFAULT_VARIANTS = ("baseline", "memalign")
# Defaults of the demo (subset and --full) for what the configuration leaves unset. One joint
# call per item judges every dimension (half the calls of the subset, a ninth of --full's).
# The embedded 135M model cannot write cited guidelines (one cited call took 10 minutes on 2
# cores and kept nothing), so with it as the reflection LM semantic memory is distilled
# extractively from the experts' rationales (no LM call), and held-out validation -- extra
# judge calls per dimension and fold -- is left to `cv`.
DEMO_SCORING = {"mode": "joint"}
DEMO_LOCAL_REFLECTION = {"reflection": "extractive", "validate_guidelines": False}
# ``--full`` on the embedded judge: one joint prompt holds all nine dimensions' sections, the
# whole notebook (up to 2,319 tokens), then the guidelines and demo lines, in SmolLM2's
# 8,192-token context; with 8 guidelines per dimension every call overflowed it. The engine
# keeps each notebook's KV state, so after its first read an aligned judgment costs what
# follows the notebook: with two guidelines and three demo lines per dimension that was
# ~2,600 tokens (~38 s on 2 cores), times 256 aligned judgments. Two demo lines (as the
# subset) and calibrations fitted on 24 of each fold's 48 training items bring the run under
# 90 minutes.
DEMO_FULL_LOCAL_MEMORY = {"max_guidelines": 2, "k": 2, "calibration_items": 24}


@dataclass(frozen=True)
class Plan:
    """What a ``cv``/``demo`` invocation evaluates."""

    dimensions: list[str] | None
    limit: int | None
    variants: list[str]


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def plan_for(args: argparse.Namespace) -> Plan:
    """Dimensions, item limit and variants from the flags (``demo`` adds its subset)."""
    variants = _split(args.variants) or list(DEFAULT_VARIANTS)
    dimensions = _split(args.dimensions) or None
    limit = args.limit
    if args.command == "demo" and not getattr(args, "full", False):
        dimensions = dimensions or list(DEMO_DIMENSIONS)
        limit = limit if limit is not None else DEMO_ITEMS
    return Plan(dimensions, limit, variants)


def options_for(args: argparse.Namespace, plan: Plan) -> CVOptions:
    """The :class:`CVOptions` of a ``cv``/``demo`` invocation; every flag is checked here,
    before any data is read or any model is built."""
    return CVOptions(folds=args.folds, seed=args.seed,
                     group_by=getattr(args, "group_by", None), variants=tuple(plan.variants),
                     references=() if getattr(args, "no_references", False) else REFERENCES,
                     dimensions=tuple(plan.dimensions) if plan.dimensions else None,
                     limit=plan.limit, n_bootstrap=args.bootstrap, progress=True,
                     checkpoint_dir=Path(args.out), resume=args.resume)


def run_cv_command(args: argparse.Namespace, settings: Any) -> int:
    """Run ``cv`` or ``demo``: cross-validate, print the table, write the report to ``--out``.

    Every object (judge LM, reflection LM, embedder, each fold's program and optimizer) is
    built by :mod:`judgealign.build` inside :func:`cross_validate`, from ``settings`` (the
    demo subset overrides ``[memory]``). Returns the process exit code (0).
    """
    from judgealign import build
    from judgealign.evaluation.crossval import cross_validate
    from judgealign.evaluation.report import format_table, reference_warnings, write_report

    plan = plan_for(args)
    options = options_for(args, plan)  # bad flags fail here, before any work
    subset = args.command == "demo" and not getattr(args, "full", False)
    if args.command == "demo":
        settings = build.settings_from(settings,
                                       overrides=demo_settings(settings, subset=subset))
    rubric, labels, card = _load_data(args)
    out = Path(args.out)
    what = (f"{len(plan.dimensions) if plan.dimensions else 'all'} dimension(s)"
            f"{' (' + ', '.join(plan.dimensions) + ')' if plan.dimensions else ''}, "
            f"{'first ' + str(plan.limit) if plan.limit else 'all'} items, {options.folds} "
            f"folds{' grouped by ' + options.group_by if options.group_by else ''}, "
            f"variants {', '.join(options.variants)}, references "
            f"{', '.join(options.references) or 'off'}, {options.n_bootstrap} bootstrap "
            "resamples")
    print(f"{args.command}: {rubric.name}: {what}; judge LM {settings.lm.model}; "
          f"report and checkpoints in {out}", flush=True)
    if subset:
        n_dims = len(plan.dimensions or ())
        joint = settings.scoring.mode == "joint"
        calls = len(options.variants) * plan.limit * (1 if joint else n_dims)
        print(f"demo: the default subset judges {plan.limit} held-out notebooks per variant "
              f"({calls} {'joint ' if joint else ''}calls, variants "
              f"{', '.join(options.variants)}; memalign also judges each training notebook "
              f"once per fold to fit its calibration), with {DEMO_MEMORY['k']} demos of <= "
              f"{DEMO_MEMORY['demo_input_tokens']} tokens, notebooks cut to "
              f"{DEMO_MEMORY['item_tokens']} tokens, reflection "
              f"{settings.memory.reflection}; --full runs every dimension and item whole",
              flush=True)
    result = cross_validate(rubric, labels, settings, options)
    paths = write_report(result, out, dataset_card=card)
    print()
    print(format_table(result))
    for line in reference_warnings(result):
        print(line)
    for variant, why in result.skipped.items():
        print(f"skipped {variant}: {why}")
    print(f"\nreport: {paths['report']}\nresults: {paths['results']}\nfigure: {paths['figure']}")
    _log_to_mlflow(result, out, settings)
    return 0


def demo_settings(settings: Any, *, subset: bool = True) -> dict[str, Any]:
    """The overrides of the demo: :data:`DEMO_MEMORY` for the default subset (``subset``;
    not for ``--full``), and :data:`DEMO_SCORING`, (with the embedded model reflecting)
    :data:`DEMO_LOCAL_REFLECTION` and (``--full`` with the embedded judge)
    :data:`DEMO_FULL_LOCAL_MEMORY` for each setting the configuration does not set itself."""
    from judgealign.lm import is_local_model

    memory = dict(DEMO_MEMORY) if subset else {}
    scoring = {k: v for k, v in DEMO_SCORING.items()
               if k not in settings.scoring.model_fields_set}
    configured = settings.memory.model_fields_set
    if is_local_model(settings.reflection.model):
        memory.update({k: v for k, v in DEMO_LOCAL_REFLECTION.items() if k not in configured})
    if not subset and is_local_model(settings.lm.model):
        memory.update({k: v for k, v in DEMO_FULL_LOCAL_MEMORY.items() if k not in configured})
    return {"memory": memory, "scoring": scoring}



def _load_data(args: argparse.Namespace) -> tuple[Any, Any, str | None]:
    """The rubric, its labels and the data set card (``demo``: the bundled notebooks)."""
    from judgealign.labels import LabelSet
    from judgealign.signatures.rubric import resolve_rubric

    if args.command == "demo":
        from judgealign.datasets import load_ml_notebooks

        data = load_ml_notebooks()
        card = data.card.read_text(encoding="utf-8") if Path(data.card).is_file() else None
        return data.rubric, data.labels, card
    rubric = resolve_rubric(args.rubric)
    return rubric, LabelSet.from_file(args.labels, rubric=rubric), None


def _log_to_mlflow(result: Any, out: Path, settings: Any) -> None:
    """Log the run with ``judgealign.tracking.log_cv`` when tracking is on and available."""
    if not settings.tracking.enabled:
        return
    if importlib.util.find_spec("judgealign.tracking") is None:
        print("judgealign: tracking is enabled but judgealign.tracking is not installed; "
              "nothing logged to MLflow", file=sys.stderr)
        return
    try:
        from judgealign.tracking import log_cv
    except ImportError as exc:
        print(f"judgealign: MLflow logging unavailable ({exc}); nothing logged",
              file=sys.stderr)
        return
    run = log_cv(result, out, settings)
    if run is not None:
        print(f"logged to MLflow: {run}")


__all__ = ["DEMO_DIMENSIONS", "DEMO_ITEMS", "Plan", "demo_settings",
           "options_for", "plan_for", "run_cv_command"]
