"""judgealign: make LLM judges agree with human experts.

    from judgealign import align, LabelSet
    from judgealign.signatures import ml_notebook

    labels = LabelSet.from_jsonl("labels.jsonl", rubric=ml_notebook.RUBRIC)
    judge = align(ml_notebook.judge(), labels)        # an aligned copy (MemAlign)
    result = judge(notebook=text)                     # a JudgeResult, one verdict per dimension
    judge.save("judges/v1"); judge = judgealign.load("judges/v1", lm="openai/gpt-4.1-mini")

Heavy libraries (dspy, chromadb, mlflow) load on first use, so importing judgealign is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "LabelSet": "judgealign.labels",
    "Label": "judgealign.labels",
    "RubricJudge": "judgealign.program",
    "JudgeResult": "judgealign.program",
    "DimensionResult": "judgealign.program",
    "MemAlign": "judgealign.optimizers.memalign",
    "Settings": "judgealign.config",
    "load_config": "judgealign.config",
    "build_lm": "judgealign.lm",
    "load": "judgealign.artifacts",
    "save": "judgealign.artifacts",
    "cross_validate": "judgealign.evaluation.crossval",
}

if TYPE_CHECKING:
    from judgealign.program import RubricJudge


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'judgealign' has no attribute {name!r}")


def align(program: RubricJudge, labels: Any, *, optimizer: Any = None,
          config: Any = None) -> RubricJudge:
    """Compile ``program`` with expert ``labels``; returns an aligned copy.

    Parameters
    ----------
    program
        A :class:`RubricJudge` (fresh, or aligned before: then only unseen labels are distilled).
    labels
        A :class:`LabelSet`, a path to a ``.jsonl``/``.csv`` label file, or a list of label rows.
    optimizer
        Any DSPy teleprompter; default :class:`MemAlign` with the memory settings of ``config``.
    config
        A :class:`Settings`, a path to a TOML file, or ``None`` (``./judgealign.toml`` and the
        environment). With ``tracking.enabled`` the alignment is logged as an MLflow run
        (``tracking.uri``, default ``sqlite:///mlflow.db``). The reflection LM is
        ``config.reflection_lm`` when set, else the program's own LM, else DSPy's configured
        LM, else ``config.lm``.
    """
    import dspy

    from judgealign.config import Settings, load_config
    from judgealign.labels import LabelSet
    from judgealign.lm import build_lm
    from judgealign.memory.embedders import build_embedder
    from judgealign.memory.grounding import GroundingFilter
    from judgealign.optimizers.memalign import MemAlign

    settings = config if isinstance(config, Settings) else load_config(config)
    if isinstance(labels, str) or hasattr(labels, "__fspath__"):
        path = str(labels)
        labels = (LabelSet.from_csv(path, rubric=program.rubric) if path.endswith(".csv")
                  else LabelSet.from_jsonl(path, rubric=program.rubric))
    elif not isinstance(labels, LabelSet):
        labels = LabelSet.from_records(list(labels), rubric=program.rubric)
    if optimizer is None:
        if settings.reflection_lm is not None:
            reflection = build_lm(settings.reflection_lm)
        else:
            reflection = program.get_lm() or dspy.settings.lm or build_lm(settings.lm)
        mem = settings.memory
        optimizer = MemAlign(reflection_lm=reflection, embedder=build_embedder(settings.embedder),
                             semantic=mem.semantic, episodic=mem.episodic, k=mem.k,
                             max_guidelines=mem.max_guidelines,
                             batch_examples=mem.batch_examples,
                             demo_input_tokens=mem.demo_input_tokens,
                             dedup_threshold=mem.dedup_threshold,
                             grounding=GroundingFilter(min_support=mem.grounding_min_support,
                                                       margin=mem.grounding_margin)
                             if mem.grounding else None,
                             validate=mem.validate_guidelines,
                             validation_budget=mem.validation_budget)
    judge = optimizer.compile(program, trainset=labels)
    if settings.tracking.enabled:
        from judgealign.tracking import log_alignment

        log_alignment(judge, settings, labels=labels)
    return judge


__all__ = ["align", "__version__", *_LAZY]
