"""One settings model for judgealign: defaults < ``judgealign.toml`` < environment < flags.

``judgealign.toml`` is looked for in the working directory unless a path is given. Environment
variables are ``JUDGEALIGN_<SECTION>__<FIELD>`` (``JUDGEALIGN_LM__MODEL=openai/gpt-4.1-mini``).
Secrets never live in the settings: an LM names the environment variable that holds its key
(``api_key_env``), so nothing that serialises settings can leak a key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from judgealign.errors import ConfigError

CONFIG_FILENAME = "judgealign.toml"
ENV_PREFIX = "JUDGEALIGN_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LMSettings(_Section):
    """Which LM judges (or reflects) and how it is called.

    ``model`` is ``local`` (the embedded SmolLM2-135M-Instruct), ``local:/path/model.gguf`` (any
    GGUF file, run in-process) or any litellm model string (``openai/gpt-4.1-mini``,
    ``anthropic/...``, ``databricks/...``, ``ollama_chat/...``, ``hosted_vllm/...``, or
    ``openai/<name>`` with ``api_base`` for an OpenAI-compatible server).
    """

    model: str = "local"
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0,
                                   description="Answer budget; None: 48 for the embedded model "
                                               "(it rambles), 512 otherwise.")
    api_base: str | None = None
    api_key_env: str | None = Field(default=None,
                                     description="Name of the env variable holding the API key.")
    num_retries: int = Field(default=3, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    cache: bool = True
    context_window: int | None = Field(default=None, gt=0,
                                       description="Override the model's context size (tokens).")
    n_threads: int | None = Field(default=None, gt=0, description="Threads of the local model.")
    seed: int = 0

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("model must not be empty")
        return value


class EmbedderSettings(_Section):
    """How items are embedded for episodic memory and guideline checks.

    ``hashing`` (default) is offline, deterministic and fit-free: word and character n-gram
    hashing from scikit-learn. ``sentence-transformers`` needs a local model path in ``model``;
    ``litellm`` takes any litellm embedding model string.
    """

    kind: Literal["hashing", "sentence-transformers", "litellm"] = "hashing"
    model: str | None = None
    dim: int = Field(default=2048, ge=64, le=1 << 20)
    api_base: str | None = None
    api_key_env: str | None = None


class MemorySettings(_Section):
    """MemAlign's two memories and the prompt budget they share."""

    semantic: bool = True
    episodic: bool = True
    k: int = Field(default=3, ge=0, description="Demos retrieved per judgment.")
    max_guidelines: int = Field(default=8, ge=0, description="Guidelines kept per dimension.")
    batch_examples: int = Field(default=8, ge=1, description="Examples per reflection call.")
    dedup_threshold: float = Field(default=0.85, gt=0.0, le=1.0)
    grounding: bool = Field(default=True, description="Reject ungrounded guidelines.")
    grounding_min_support: float = Field(default=0.12, ge=-1.0, le=1.0)
    grounding_margin: float = Field(default=0.0, ge=-1.0, le=1.0)
    demo_input_tokens: int = Field(default=350, ge=32,
                                   description="Budget of each demo's item text (tokens).")
    item_tokens: int | None = Field(default=None, ge=64,
                                    description="Budget of the judged item; None: what is left.")
    validate_guidelines: bool = False
    validation_budget: int = Field(default=40, ge=0, description="LM calls for validation.")


class TrackingSettings(_Section):
    """MLflow tracking of alignment and evaluation runs."""

    enabled: bool = False
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "judgealign"


class Settings(_Section):
    """All of judgealign's settings; ``reflection_lm`` defaults to ``lm``."""

    lm: LMSettings = Field(default_factory=LMSettings)
    reflection_lm: LMSettings | None = None
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    @property
    def reflection(self) -> LMSettings:
        return self.reflection_lm or self.lm

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-able data; holds no secret by construction."""
        return self.model_dump(mode="json")


def load_config(path: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from a TOML file, the environment and explicit overrides.

    Parameters
    ----------
    path
        A TOML file. ``None`` uses ``./judgealign.toml`` when it exists.
    overrides
        Nested values from flags or code, e.g. ``{"lm": {"model": "openai/gpt-4.1-mini"}}``;
        they win over everything else.
    environ
        The environment to read (default ``os.environ``).
    """
    file_path = Path(path) if path is not None else Path.cwd() / CONFIG_FILENAME
    if path is not None and not file_path.is_file():
        raise ConfigError(f"config file not found: {file_path}")
    layers: list[tuple[str, dict[str, Any]]] = []
    if file_path.is_file():
        layers.append((str(file_path), _read_toml(file_path)))
    layers.append(("environment", _from_env(os.environ if environ is None else environ)))
    layers.append(("overrides", _nested(dict(overrides or {}))))
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _deep_merge(merged, data)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"malformed config file {path}: {exc}") from None


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, field = key[len(ENV_PREFIX):].lower().partition("__")
        data.setdefault(section, {})[field] = value
    return data


def _nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """Accept dotted keys (``"lm.model"``) beside nested dicts; drop ``None`` (flag not given)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            value = _nested(value)
        parts = key.split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, layers: list[tuple[str, dict[str, Any]]]) -> str:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        source = next((name for name, data in reversed(layers) if _has_path(data, loc)), None)
        where = ".".join(loc) or "(top level)"
        if source == "environment":
            where = ENV_PREFIX + "__".join(p.upper() for p in loc)
        problems.append(f"{where}: {err['msg']}" + (f" (from {source})" if source else ""))
    return "invalid configuration: " + "; ".join(problems)


def _has_path(data: Any, loc: list[str]) -> bool:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True
