"""The one place where settings become objects.

``Settings`` (plus, for cross-validation, a *variant*) go in; the judge LM, the reflection LM,
the embedder, a fresh judge program, the optimizer, a compiled judge and a loaded judge come
out. ``align``, ``cv``/``demo``, ``load``, the MLflow model and every CLI command ask this
module and nothing else builds these, so a fold of ``cv`` is exactly what ``align`` ships with
the same settings.

A CV variant is a settings override (:data:`VARIANTS`): ``memalign`` is the settings as they
are (score policy ``[scoring] policy``, default ``calibrated``), ``memalign-sampled`` scores
with the level the LM writes (the behaviour before score policies), ``memalign-joint`` judges
every dimension of an item in one call (``[scoring] mode = "joint"``), ``memalign-classic``
uses DSPy's prompt layout instead of the item-first one, ``semantic-only`` and
``episodic-only`` switch one memory off, ``baseline`` is the unaligned judge, and the DSPy
few-shot baselines replace the optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from judgealign import lm as _lm
from judgealign.config import (
    EmbedderSettings,
    LMSettings,
    MemorySettings,
    ScoringSettings,
    Settings,
    load_config,
    with_overrides,
)
from judgealign.errors import ConfigError

BASELINE = "baseline"
# variant -> settings override (nested dict merged into the settings); None: not aligned.
VARIANTS: dict[str, dict[str, Any] | None] = {
    BASELINE: None,
    "memalign": {},
    "semantic-only": {"memory": {"episodic": False}},
    "episodic-only": {"memory": {"semantic": False}},
    # The score the LM writes, as before score policies (issue 13), for comparison.
    "memalign-sampled": {"scoring": {"policy": "sampled"}},
    "memalign-joint": {"scoring": {"mode": "joint"}},
    # DSPy's own prompt layout (the item last), to measure what item-first changes (issue 15).
    "memalign-classic": {"scoring": {"layout": "classic"}},
}
FEWSHOT_VARIANTS = ("labeled-fewshot", "knn-fewshot", "bootstrap-fewshot")
UNSUPPORTED_VARIANTS = ("mipro", "simba", "gepa")


def settings_from(config: Settings | str | Path | None = None, *,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """``config`` as :class:`Settings`: a Settings (copied when overridden), a TOML path, or
    ``None`` (``./judgealign.toml`` and the environment)."""
    if isinstance(config, Settings):
        return with_overrides(config, overrides)
    return load_config(config, overrides=overrides)


def variant_settings(settings: Settings, variant: str) -> Settings:
    """The settings a CV variant runs with (see :data:`VARIANTS`)."""
    if variant in VARIANTS:
        override = VARIANTS[variant]
        return settings_from(settings, overrides=override) if override else settings
    if variant in FEWSHOT_VARIANTS or variant in UNSUPPORTED_VARIANTS:
        return settings
    raise ConfigError(f"unknown variant {variant!r}; known: "
                      f"{', '.join([*VARIANTS, *FEWSHOT_VARIANTS, *UNSUPPORTED_VARIANTS])}")


# --- LMs and the embedder -------------------------------------------------------------------


def lm(settings: LMSettings) -> Any:
    """A ``dspy.LM`` for one ``[lm]``-style section."""
    return _lm.build_lm(settings)  # through the module: one place to substitute in tests


def judge_lm(settings: Settings) -> Any:
    """The judge LM of ``settings`` (``[lm]``)."""
    return _lm.build_lm(settings.lm)


def reflection_lm(settings: Settings, *, program: Any = None) -> Any:
    """MemAlign's reflection LM: ``[reflection_lm]`` when set, else the program's own LM, else
    DSPy's configured LM, else ``[lm]``."""
    if settings.reflection_lm is not None:
        return _lm.build_lm(settings.reflection_lm)
    import dspy

    own = program.get_lm() if program is not None else None
    return own or dspy.settings.lm or _lm.build_lm(settings.lm)


def embedder(settings: Settings) -> Any:
    """The embedder of ``settings`` (``[embedder]``)."""
    from judgealign.memory.embedders import HashingEmbedder, LiteLLMEmbedder
    from judgealign.memory.embedders import SentenceTransformerEmbedder as _ST

    emb = settings.embedder
    if emb.kind == "hashing":
        return HashingEmbedder(emb.dim)
    if not emb.model:
        raise ConfigError(f"embedder.kind = {emb.kind!r} needs embedder.model")
    if emb.kind == "sentence-transformers":
        return _ST(emb.model)
    return LiteLLMEmbedder(emb.model, api_base=emb.api_base, api_key_env=emb.api_key_env)


# --- programs and optimizers ----------------------------------------------------------------


def program(rubric: Any, settings: Settings | None = None, *, lm: Any = None) -> Any:
    """A fresh (unaligned) judge of ``rubric`` with the memory budgets, the prompt layout
    (``[scoring] layout``) and the score policy (``[scoring] policy``) of ``settings``.

    ``lm`` fixes its LM; ``None`` leaves it unset, so the judge uses DSPy's configured LM or,
    failing that, the configured ``[lm]`` (see :meth:`RubricJudge.forward`).
    """
    from judgealign.program import RubricJudge
    from judgealign.signatures.rubric import resolve_rubric

    settings = settings or settings_from(None)
    mem = settings.memory
    return RubricJudge(resolve_rubric(rubric), lm=lm, k=mem.k,
                       demo_input_tokens=mem.demo_input_tokens, item_tokens=mem.item_tokens,
                       layout=settings.scoring.layout, policy=settings.scoring.policy,
                       mode=settings.scoring.mode)


def memalign_options(memory: MemorySettings, scoring: ScoringSettings | None = None
                     ) -> dict[str, Any]:
    """MemAlign's keyword arguments from ``[memory]`` (every field that shapes alignment)
    and, when given, ``[scoring]`` (the score policy; ``calibrated`` fits calibrations)."""
    from judgealign.memory.grounding import GroundingFilter

    options: dict[str, Any] = {
        "semantic": memory.semantic, "episodic": memory.episodic, "k": memory.k,
        "max_guidelines": memory.max_guidelines, "batch_examples": memory.batch_examples,
        "demo_input_tokens": memory.demo_input_tokens,
        "dedup_threshold": memory.dedup_threshold,
        "grounding": GroundingFilter(min_support=memory.grounding_min_support,
                                     margin=memory.grounding_margin)
        if memory.grounding else None,
        "validate": memory.validate_guidelines,
        "validation_budget": memory.validation_budget,
        "validation_items": memory.validation_items,
        "calibration_items": memory.calibration_items,
        "reflection": memory.reflection,
        "max_reflection_calls": memory.max_reflection_calls,
    }
    if scoring is not None:
        options["policy"] = scoring.policy
    return options



def optimizer(settings: Settings, variant: str = "memalign", *, program: Any = None,
              judge_lm: Any = None, reflection: Any = None, embedder_: Any = None,
              progress: bool = False, seed: int = 0) -> Any:
    """The optimizer a variant aligns with; ``None`` for ``baseline``.

    Parameters
    ----------
    settings
        The user's settings; the variant's override is applied here.
    program
        The judge to be aligned (its LM is the reflection LM's fallback).
    judge_lm, reflection, embedder_
        Already-built objects to reuse (a CV run builds them once); default: built from
        ``settings``.
    """
    settings = variant_settings(settings, variant)
    if variant == BASELINE:
        return None
    if variant in UNSUPPORTED_VARIANTS:
        from judgealign.optimizers.baselines import UnsupportedBaseline, unsupported_reason

        raise UnsupportedBaseline(unsupported_reason(variant))
    emb = embedder_ if embedder_ is not None else embedder(settings)
    if variant in FEWSHOT_VARIANTS:
        from judgealign.optimizers.baselines import FewShotBaseline

        return FewShotBaseline(variant, lm=judge_lm, k=max(settings.memory.k, 1),
                               demo_input_tokens=settings.memory.demo_input_tokens,
                               embedder=emb, seed=seed)
    from judgealign.optimizers.memalign import MemAlign

    if reflection is None and settings.memory.semantic:
        reflection = reflection_lm(settings, program=program)
    return MemAlign(reflection_lm=reflection, embedder=emb, progress=progress,
                    seed=seed, **memalign_options(settings.memory, settings.scoring))


def compile(program: Any, labels: Any, settings: Settings, *, variant: str = "memalign",
            judge_lm: Any = None, reflection: Any = None, embedder_: Any = None,
            progress: bool = False, seed: int = 0) -> Any:
    """``program`` aligned on ``labels`` as ``variant`` of ``settings`` -- what ``align``
    returns and what every CV fold evaluates (``baseline``: the program itself)."""
    opt = optimizer(settings, variant, program=program, judge_lm=judge_lm,
                    reflection=reflection, embedder_=embedder_, progress=progress, seed=seed)
    if opt is None:
        return program
    return opt.compile(program, trainset=labels)


# --- saved judges ---------------------------------------------------------------------------


def load_judge(path: str | Path, lm: Any = None, *, config: Settings | str | Path | None = None,
               reembed: bool = False, attach_lm: bool = True) -> Any:
    """Load and verify a saved judge (read-only) and give it its LM.

    Parameters
    ----------
    lm
        A model string (``"openai/gpt-4.1-mini"``, ``"local"``: the other ``[lm]`` fields
        still apply), a ``dspy.LM``, or ``None``: the LM of ``config``.
    config
        Settings or a TOML path; default ``./judgealign.toml`` and the environment. The
        embedder is the one the judge was saved with unless the configuration names another
        explicitly (then ``reembed=True`` is required: every episode is re-embedded).
    attach_lm
        ``False`` loads the memories only (e.g. to unalign) without building an LM.
    """
    from judgealign.artifacts import open_saved
    from judgealign.memory.embedders import embedder_from_identity
    from judgealign.program import RubricJudge

    settings = settings_from(config)
    saved = open_saved(path)
    identity = saved.embedder_identity
    emb = None
    if identity is not None:
        configured = embedder(settings)
        # Only an embedder the user asked for (not the default) overrides the saved one.
        explicit = settings.embedder != EmbedderSettings()
        if configured.identity() == identity:
            emb = configured
        elif reembed:
            emb = configured
        elif explicit:
            raise ConfigError(f"{saved.root} was indexed with embedder {identity}, but the "
                              f"configuration asks for {configured.identity()}; pass "
                              "reembed=True (CLI: --reembed) to re-embed its episodes")
        else:
            emb = embedder_from_identity(identity, where=str(saved.root))
    reindex = emb is not None and emb.identity() != identity
    judge = RubricJudge.from_saved(saved, embedder=emb, reindex=reindex)
    if attach_lm:
        if lm is None:
            judge.set_lm(judge_lm(settings))
        elif isinstance(lm, str):
            judge.set_lm(_lm.build_lm(LMSettings(**{**settings.lm.model_dump(), "model": lm})))
        else:
            judge.set_lm(lm)
    return judge


__all__ = ["BASELINE", "FEWSHOT_VARIANTS", "UNSUPPORTED_VARIANTS", "VARIANTS", "compile",
           "embedder", "judge_lm", "lm", "load_judge", "memalign_options", "optimizer",
           "program", "reflection_lm", "settings_from", "variant_settings"]
