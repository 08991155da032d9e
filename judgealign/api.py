"""judgealign's public functions: ``align`` a judge with expert labels, ``load`` a saved one.

Both ask :mod:`judgealign.build` for every object they need, so what ``align`` returns is
what a ``cv`` fold measures with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from judgealign import build


def align(program: Any, labels: Any, *, optimizer: Any = None, config: Any = None,
          progress: bool = False) -> Any:
    """Compile ``program`` with expert ``labels``; returns an aligned copy.

    Parameters
    ----------
    program
        A :class:`~judgealign.program.RubricJudge` (fresh, or aligned before: then only
        unseen labels are distilled).
    labels
        A :class:`~judgealign.labels.LabelSet`, a path to a ``.jsonl``/``.csv`` label file,
        or a list of label rows.
    optimizer
        Any DSPy teleprompter; default :class:`~judgealign.optimizers.memalign.MemAlign`
        built from ``config`` by :func:`judgealign.build.optimizer`.
    config
        A :class:`~judgealign.config.Settings`, a path to a TOML file, or ``None``
        (``./judgealign.toml`` and the environment). With ``tracking.enabled`` the alignment
        is logged as an MLflow run. The reflection LM is ``[reflection_lm]`` when set, else the
        program's own LM, else DSPy's configured LM, else ``[lm]``.
    progress
        Show a progress bar over the dimensions.
    """
    from judgealign.labels import LabelSet

    settings = build.settings_from(config)
    if isinstance(labels, str | Path):
        labels = LabelSet.from_file(labels, rubric=program.rubric)
    elif not isinstance(labels, LabelSet):
        labels = LabelSet.from_records(list(labels), rubric=program.rubric)
    if optimizer is None:
        judge = build.compile(program, labels, settings, progress=progress)
    else:
        judge = optimizer.compile(program, trainset=labels)
    if settings.tracking.enabled:
        from judgealign.tracking import log_alignment

        log_alignment(judge, settings, labels=labels)
    return judge


def load(path: str | Path, lm: Any = None, *, config: Any = None, reembed: bool = False,
         attach_lm: bool = True) -> Any:
    """Load and verify a saved judge (see :func:`judgealign.build.load_judge`)."""
    return build.load_judge(path, lm, config=config, reembed=reembed, attach_lm=attach_lm)


__all__ = ["align", "load"]
