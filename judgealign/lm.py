"""The one place that turns settings into a DSPy LM, and what judgealign asks of an LM.

``build_lm`` maps ``local`` / ``local:/path.gguf`` to the embedded llama.cpp engine and every
other model string to ``dspy.LM`` (litellm). The helpers read a model's context window and
token counter from its engine when it has one (the local model knows both exactly) and from
litellm's model table otherwise; an unknown remote model is assumed to have 8,192 tokens,
never 128k, so prompts are cut rather than rejected.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from functools import cache
from typing import Any

from judgealign.config import LMSettings
from judgealign.errors import ConfigError
from judgealign.items import TokenCounter, estimate_tokens

DEFAULT_CONTEXT_WINDOW = 8192
DEFAULT_CONCURRENCY = 8
LOCAL_PREFIX = "local"
RETRY_TEMPERATURE = 0.7  # a retry samples: a greedy decoder would repeat its failed answer


def build_lm(settings: LMSettings) -> Any:
    """A ``dspy.LM`` for these settings. Secrets are read from ``api_key_env`` at call time."""
    import dspy

    model = settings.model
    if is_local_model(model):
        from judgealign.local_lm import local_lm

        path = model.partition(":")[2] or None
        return local_lm(path, settings)
    kwargs: dict[str, Any] = {"temperature": settings.temperature,
                              "max_tokens": settings.max_tokens or 512,
                              "num_retries": settings.num_retries, "cache": settings.cache}
    if settings.api_base:
        kwargs["api_base"] = settings.api_base
        # DSPy leaves api_base out of its answer-cache key, so two servers behind one model
        # name would share answers. rollout_id is DSPy's documented way to keep otherwise
        # identical requests apart in the cache (it is never sent to the provider): derive it
        # from the endpoint.
        kwargs["rollout_id"] = endpoint_namespace(settings.api_base)
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
    with warnings.catch_warnings():
        # "rollout_id has no effect when temperature=0": ours partitions the cache on purpose.
        warnings.filterwarnings("ignore", message="rollout_id has no effect")
        lm = dspy.LM(model, **kwargs)
    lm._warned_zero_temp_rollout = True
    if settings.context_window:
        lm.judgealign_context_window = settings.context_window
    lm.judgealign_concurrency = settings.concurrency
    return lm


def is_local_model(model: str) -> bool:
    """Whether a model string names the embedded engine (``local`` or ``local:/path.gguf``)."""
    return model == LOCAL_PREFIX or model.startswith(LOCAL_PREFIX + ":")


def endpoint_namespace(api_base: str) -> int:
    """A stable integer naming an endpoint, used as the base of DSPy's ``rollout_id``."""
    digest = hashlib.sha256(api_base.strip().rstrip("/").encode("utf-8")).digest()
    return int.from_bytes(digest[:6], "big") * 1000  # room for retry attempts below it


def retry_config(lm: Any, attempt: int) -> dict[str, Any]:
    """Per-call options of judging attempt ``attempt`` (0-based).

    The first attempt uses the LM as configured. A retry must be a different request:
    resending the same one returns the same unparseable answer from DSPy's cache, the
    engine's cache or a greedy decoder. So it gets its own ``rollout_id`` (part of DSPy's
    cache key), a sampling temperature of at least :data:`RETRY_TEMPERATURE`, and for
    engines that take one, another seed (part of the embedded engine's cache key).
    """
    if attempt <= 0:
        return {}
    kwargs = getattr(lm, "kwargs", None) or {}
    base = kwargs.get("rollout_id") or 0
    config: dict[str, Any] = {
        "rollout_id": int(base) + attempt,
        "temperature": max(float(kwargs.get("temperature") or 0.0), RETRY_TEMPERATURE)}
    engine = getattr(lm, "engine", None)
    if "seed" in (getattr(engine, "supported_params", None) or ()):
        config["seed"] = int(kwargs.get("seed") or 0) + attempt
    return config


_CONFIGURED: dict[str, Any] = {}
_CONFIGURED_LOCK = threading.Lock()


def configured_lm() -> Any:
    """The LM of judgealign's configuration -- ``[lm]`` of ``./judgealign.toml`` and the
    ``JUDGEALIGN_LM__*`` environment, else the embedded model -- built once per process and
    settings. A judge with no LM of its own, used where DSPy has none configured, judges
    with it."""
    from judgealign.config import load_config

    settings = load_config().lm
    key = settings.model_dump_json()
    with _CONFIGURED_LOCK:
        if key not in _CONFIGURED:
            _CONFIGURED[key] = build_lm(settings)
        return _CONFIGURED[key]


def lm_context_window(lm: Any) -> int:
    """Tokens the LM accepts (prompt and answer together)."""
    return own_context_window(lm) or _litellm_window(str(getattr(lm, "model", "")))


def own_context_window(lm: Any) -> int | None:
    """The window the LM itself states -- a configured override or its engine's -- or
    ``None`` when only litellm's listing or the default (possibly too small) can tell."""
    override = getattr(lm, "judgealign_context_window", None)
    if override:
        return int(override)
    engine = getattr(lm, "engine", None)
    if engine is not None and getattr(engine, "context_window", None):
        return int(engine.context_window)
    return None


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
    """The LM's own tokenizer: the engine's when it has one (the embedded model counts
    exactly), else litellm's counter for the model (tiktoken or the provider's tokenizer,
    bundled with litellm), else a conservative estimate."""
    engine = getattr(lm, "engine", None)
    counter = getattr(engine, "count_tokens", None)
    if callable(counter):
        return counter
    model = getattr(lm, "model", None)
    return _litellm_counter(str(model)) if model else estimate_tokens


@cache
def _litellm_counter(model: str) -> TokenCounter:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:  # pragma: no cover - litellm comes with dspy
        return estimate_tokens

    def count(text: str) -> int:
        try:
            return int(litellm.token_counter(model=model, text=text))
        except Exception:  # a model litellm has no tokenizer for
            return estimate_tokens(text)

    return count


def is_answer_error(exc: Exception) -> bool:
    """True when the call worked but its answer did not parse or was off the scale (as
    opposed to a call the provider refused: a retry should then change the request)."""
    from dspy.utils.exceptions import AdapterParseError

    return isinstance(exc, AdapterParseError | ValueError)


def lm_concurrency(lm: Any, requested: int | None = None) -> int:
    """Calls in flight at most for ``lm``: 1 for an in-process model that is not thread-safe,
    else ``requested`` when given, else its ``[lm] concurrency`` (default
    :data:`DEFAULT_CONCURRENCY`)."""
    if not lm_is_parallel_safe(lm):
        return 1
    return max(1, int(requested or getattr(lm, "judgealign_concurrency", None)
                      or DEFAULT_CONCURRENCY))


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
