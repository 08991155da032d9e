"""One settings model for judgealign: defaults < ``judgealign.toml`` < environment < flags.

``judgealign.toml`` is looked for in the working directory unless a path is given. Environment
variables are ``JUDGEALIGN_<SECTION>__<FIELD>`` (``JUDGEALIGN_LM__MODEL=openai/gpt-4.1-mini``).
Secrets never live in the settings: an LM names the environment variable that holds its key
(``api_key_env``), so nothing that serialises settings can leak a key.

The layering is pydantic-settings' (:func:`load_config`); the sections are plain pydantic models,
so a new section is one class and one field of :class:`Settings`, and files, environment and
overrides reach it with no further code.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from judgealign.errors import ConfigError
from judgealign.textfiles import checked_path, read_text, shown

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
                                   description="Answer budget; None: 32 for the embedded model "
                                               "(it rambles), 512 otherwise.")
    api_base: str | None = None
    api_key_env: str | None = Field(default=None,
                                     description="Name of the env variable holding the API key.")
    num_retries: int = Field(default=3, ge=0,
                             description="Retries of a failed call (a rate-limit answer, HTTP "
                                         "429, included), with exponential backoff.")
    concurrency: int = Field(default=8, ge=1, le=256,
                             description="Calls in flight at most (remote LMs; an in-process "
                                         "model is called one at a time).")
    timeout: float | None = Field(default=None, gt=0)
    cache: bool = True
    context_window: int | None = Field(default=None, gt=0,
                                       description="Override the model's context size (tokens).")
    n_threads: int | None = Field(default=None, gt=0, description="Threads of the local model.")
    prefix_states_mb: int | None = Field(
        default=None, ge=0,
        description="Local model: memory (MB) for the KV states of prompts' shared parts (the "
                    "rubric text and the item), so an item judged again later in a run is "
                    "read once; default a third of physical memory, at most 8 GiB; 0: none.")
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

    @model_validator(mode="after")
    def _model_named(self) -> EmbedderSettings:
        # Caught here, where the setting is read, not when the first item is embedded.
        if self.kind != "hashing" and not (self.model or "").strip():
            raise ValueError(f"kind = {self.kind!r} needs model (a local path or a model name)")
        return self


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
    # --- reflection modes and validation (issue 14; see MemAlign's docstring) ---
    reflection: Literal["auto", "cited", "per-example", "extractive"] = Field(
        default="auto", description="How guidelines are made; auto: cited, else per-example, "
                                    "else extractive.")
    max_reflection_calls: int = Field(default=12, ge=0,
                                      description="Per-example reflection calls per dimension.")
    validate_guidelines: bool = Field(default=True,
                                      description="Check new guidelines on held-out examples.")
    validation_budget: int = Field(default=12, ge=0,
                                   description="Judge calls for validation per dimension.")
    validation_items: int = Field(default=3, ge=1,
                                  description="Held-out examples each guideline is judged on.")
    calibration_items: int | None = Field(
        default=None, ge=1,
        description="Most training items a calibrated compile judges to fit each dimension's "
                    "calibration (a seeded sample); unset: all of them.")


class TrackingSettings(_Section):
    """MLflow tracking of alignment and evaluation runs."""

    enabled: bool = False
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "judgealign"


class ScoringSettings(_Section):
    """How a judgment is asked, and how its score is chosen.

    ``layout``: ``item-first`` (default) puts the item first, fenced as data and shared by
    every dimension's prompt (the embedded model reads it once per item; prompt caches apply;
    text in it that poses as instructions or prompt markers is neutralised); ``classic`` is
    DSPy's JSONAdapter layout (instructions first, the item last and unfenced), kept for
    comparison. See :mod:`judgealign.adapter`.

    ``policy`` (see :mod:`judgealign.calibration`): ``calibrated`` (default) -- MemAlign fits
    a calibration per dimension on the training labels and the judge scores with it (with no
    calibration: as ``expected``); ``expected`` -- the level nearest the probability-weighted
    mean of the level probabilities (N/A when it has more than half the mass); ``sampled`` --
    the level the LM wrote.

    ``mode``: ``per-dimension`` (default; one call per dimension) or ``joint`` (one call per
    item returns every dimension's score and rationale: the cheapest way to judge a rubric,
    see :mod:`judgealign.joint`).
    """

    layout: Literal["item-first", "classic"] = "item-first"
    policy: Literal["sampled", "expected", "calibrated"] = "calibrated"
    mode: Literal["per-dimension", "joint"] = "per-dimension"


class Settings(_Section):
    """All of judgealign's settings; ``reflection_lm`` defaults to ``lm``."""

    lm: LMSettings = Field(default_factory=LMSettings)
    reflection_lm: LMSettings | None = None
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)

    @property
    def reflection(self) -> LMSettings:
        return self.reflection_lm or self.lm

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-able data; holds no secret by construction."""
        return self.model_dump(mode="json")


def load_config(path: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from a TOML file, the environment and explicit overrides.

    Layers, lowest first: defaults < the TOML file < environment < ``overrides``; nested
    sections merge key by key. The layering is pydantic-settings' (a ``BaseSettings`` with
    three sources); judgealign adds messages that name the field and where its value came
    from (the file's path, the environment variable, or "overrides").

    Parameters
    ----------
    path
        A TOML file. ``None`` uses ``./judgealign.toml`` when it exists. UTF-8, a byte-order
        mark is accepted.
    overrides
        Nested values from flags or code, e.g. ``{"lm": {"model": "openai/gpt-4.1-mini"}}``, or
        dotted keys (``{"lm.model": ...}``); ``None`` values are dropped (a flag not given).
        They win over everything else.
    environ
        The environment to read (default ``os.environ``): ``JUDGEALIGN_<SECTION>__<FIELD>``,
        names in any case; a whole section may also be given as JSON
        (``JUDGEALIGN_LM='{"model": "openai/x"}'``).

    Raises
    ------
    ConfigError
        The file is missing, unreadable or not TOML; a value is invalid (every invalid field
        is listed with its source); an environment variable names no section.
    """
    if path is not None:
        file_path: Path | None = checked_path(path, error=ConfigError, what="config file")
        if file_path.is_dir():
            raise ConfigError(f"config file {shown(file_path)} is a folder, not a file")
        if not file_path.is_file():
            raise ConfigError(f"config file not found: {shown(file_path)}")
    else:
        default = Path.cwd() / CONFIG_FILENAME
        file_path = default if default.is_file() else None
    env = os.environ if environ is None else environ
    _check_environment(env)
    request = _Request(file=file_path, environ=env, overrides=_nested(dict(overrides or {})))
    token = _REQUEST.set(request)
    try:
        layered = _Layered()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, [(name, source()) for name, source
                                          in reversed(request.sources)])) from None
    except SettingsError as exc:  # a section given as JSON that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = ENV_PREFIX + found.group(1).upper() if found else "an environment variable"
        raise ConfigError(f"invalid configuration: {name}: a whole section must be a JSON "
                          "object, or set its fields one by one "
                          f"({ENV_PREFIX}<SECTION>__<FIELD>) (from environment)") from None
    finally:
        _REQUEST.reset(token)
    # A plain Settings, equal to one built in code: the loader class stays an implementation
    # detail (its sections are reused as they are, already validated).
    return Settings.model_validate(dict(layered))


# --- layering with pydantic-settings ---------------------------------------------------------


@dataclass
class _Request:
    """One ``load_config`` call's inputs, handed to the settings sources through a ContextVar
    (``settings_customise_sources`` is a classmethod and receives no call arguments)."""

    file: Path | None
    environ: Mapping[str, str]
    overrides: dict[str, Any]
    sources: list[tuple[str, PydanticBaseSettingsSource]] = field(default_factory=list)


_REQUEST: ContextVar[_Request] = ContextVar("judgealign_load_config")


class _TomlFile(TomlConfigSettingsSource):
    """pydantic-settings' TOML source reading through judgealign's checked reader."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        return _read_toml(file_path)


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(key if self.case_sensitive else key.lower()): value
                for key, value in self._environ.items()
                if not (self.env_ignore_empty and value == "")}


class _Layered(Settings, BaseSettings):
    """:class:`Settings` with pydantic-settings' sources; used only inside ``load_config``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      case_sensitive=False, extra="forbid")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest priority first: overrides > environment > file (> the fields' defaults).
        request = _REQUEST.get()
        request.sources = [("overrides", InitSettingsSource(settings_cls, request.overrides)),
                           ("environment", _Environment(settings_cls, request.environ))]
        if request.file is not None:
            request.sources.append((str(request.file), _TomlFile(settings_cls, request.file)))
        return tuple(source for _, source in request.sources)


def with_overrides(settings: Settings, overrides: Mapping[str, Any] | None) -> Settings:
    """``settings`` with ``overrides`` (nested or dotted keys, as in :func:`load_config`)
    applied on top, validated again; ``settings`` itself is left as it is."""
    if not overrides:
        return settings
    extra = _nested(dict(overrides))
    try:
        return Settings.model_validate(_deep_merge(settings.model_dump(), extra))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, [("overrides", extra)])) from None


def _read_toml(path: Path) -> dict[str, Any]:
    text = read_text(path, error=ConfigError, what="config file")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"malformed config file {shown(path)}: nested too deeply") from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: a 5,000-digit integer
        raise ConfigError(f"malformed config file {shown(path)}: {exc}") from None


def _check_environment(environ: Mapping[str, str]) -> None:
    """Problems pydantic-settings would pass over: ``JUDGEALIGN_<SECTION>__<FIELD>`` naming
    no section (a typo; pydantic-settings reads only the variables of known fields), and a
    settings variable whose value is not text (bytes that were not UTF-8 arrive as lone
    surrogates). Other ``JUDGEALIGN_*`` variables (``JUDGEALIGN_DEBUG``) are not settings."""
    for key, value in environ.items():
        if not key.upper().startswith(ENV_PREFIX):
            continue
        section, nested, _ = key[len(ENV_PREFIX):].lower().partition("__")
        if nested and section not in Settings.model_fields:
            raise ConfigError(f"{key}: no settings section {section!r} (sections: "
                              f"{', '.join(Settings.model_fields)}) (from environment)")
        if section not in Settings.model_fields:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{key}: the value must be text, got {type(value).__name__} "
                              "(from environment)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{key}: the value is not UTF-8 text (from environment)") from None


def _nested(overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Accept dotted keys (``"lm.model"``) beside nested dicts; drop ``None`` (flag not given)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        key = str(key)
        if isinstance(value, Mapping):
            value = _nested(dict(value), f"{where}{key}.")
        parts = key.split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"overrides: {where}{part} is given both as a value and as a "
                                  "section")
        if isinstance(target.get(parts[-1]), dict) and isinstance(value, dict):
            target[parts[-1]] = _deep_merge(target[parts[-1]], value)
        else:
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


def _describe(exc: ValidationError, layers: list[tuple[str, Any]]) -> str:
    """Every invalid field with the layer its value came from (``layers``: highest first)."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        source = next((name for name, data in layers if _has_path(data, loc)), None)
        where = ".".join(loc) or "(top level)"
        if source == "environment":
            where = ENV_PREFIX + "__".join(p.upper() for p in loc)
        problems.append(f"{where}: {err['msg']}" + (f" (from {source})" if source else ""))
    return "invalid configuration: " + "; ".join(problems)


def _has_path(data: Any, loc: list[str]) -> bool:
    for part in loc:
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True
