"""The one place that turns settings into a DSPy LM, and what judgealign asks of an LM.

``build_lm`` maps ``local`` / ``local:/path.gguf`` to the embedded llama.cpp engine and every
other model string to ``dspy.LM`` (litellm). The helpers read a model's context window and
token counter from its engine when it has one (the local model knows both exactly) and from
litellm's model table otherwise; an unknown remote model is assumed to have 8,192 tokens,
never 128k, so prompts are cut rather than rejected.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from judgealign.config import LMSettings
from judgealign.errors import ConfigError
from judgealign.items import TokenCounter, estimate_tokens

DEFAULT_CONTEXT_WINDOW = 8192
LOCAL_PREFIX = "local"


def build_lm(settings: LMSettings) -> Any:
    """A ``dspy.LM`` for these settings. Secrets are read from ``api_key_env`` at call time."""
    import dspy

    model = settings.model
    if model == LOCAL_PREFIX or model.startswith(LOCAL_PREFIX + ":"):
        from judgealign.local_lm import local_lm

        path = model.partition(":")[2] or None
        return local_lm(path, settings)
    kwargs: dict[str, Any] = {"temperature": settings.temperature,
                              "max_tokens": settings.max_tokens or 512,
                              "num_retries": settings.num_retries, "cache": settings.cache}
    if settings.api_base:
        kwargs["api_base"] = settings.api_base
    if settings.timeout:
        kwargs["timeout"] = settings.timeout
    if settings.api_key_env:
        key = os.environ.get(settings.api_key_env)
        if not key:
            raise ConfigError(f"lm.api_key_env names {settings.api_key_env!r}, "
                              "but that environment variable is not set")
        kwargs["api_key"] = key
    if "/" not in model:
        raise ConfigError(f"lm.model {model!r}: expected 'local', 'local:/path/model.gguf' or a "
                          "litellm model string such as 'openai/gpt-4.1-mini'")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download
    lm = dspy.LM(model, **kwargs)
    if settings.context_window:
        lm.judgealign_context_window = settings.context_window
    return lm


def lm_context_window(lm: Any) -> int:
    """Tokens the LM accepts (prompt and answer together)."""
    override = getattr(lm, "judgealign_context_window", None)
    if override:
        return int(override)
    engine = getattr(lm, "engine", None)
    if engine is not None and getattr(engine, "context_window", None):
        return int(engine.context_window)
    return _litellm_window(str(getattr(lm, "model", "")))


@cache
def _litellm_window(model: str) -> int:
    try:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        info = litellm.get_model_info(model)
        window = info.get("max_input_tokens") or info.get("max_tokens")
        return int(window) if window else DEFAULT_CONTEXT_WINDOW
    except Exception:  # litellm raises for models it does not list
        return DEFAULT_CONTEXT_WINDOW


def lm_token_counter(lm: Any) -> TokenCounter:
    """The LM's own tokenizer when it exposes one, else a conservative estimate."""
    engine = getattr(lm, "engine", None)
    counter = getattr(engine, "count_tokens", None)
    return counter if callable(counter) else estimate_tokens


def lm_is_parallel_safe(lm: Any) -> bool:
    """False for in-process models that must be called from one thread at a time."""
    engine = getattr(lm, "engine", None)
    return bool(getattr(engine, "parallel_safe", True))


def lm_identity(lm: Any) -> dict[str, Any]:
    """What identifies an LM in reports and artifacts (no secrets)."""
    engine = getattr(lm, "engine", None)
    ident = {"model": str(getattr(lm, "model", type(lm).__name__))}
    describe = getattr(engine, "describe", None)
    if callable(describe):
        ident.update(describe())
    return ident
