"""A scripted language model for tests: deterministic, offline, instant.

``scripted_lm(respond)`` returns a real ``dspy.LM`` whose engine calls ``respond(prompt)`` with
the whole prompt (system and user text joined) and sends back what it returns: a ``dict`` of
output fields (serialised as JSON, which every DSPy adapter parses) or a raw ``str``. Token
usage is counted as characters/4 so cost accounting has something to add up.

To test level probabilities, ``respond`` returns a :class:`Scripted` answer carrying token log
probabilities in OpenAI's shape; :func:`with_levels` builds one from a level distribution. The
engine (and :class:`FakeOpenAIServer`) send them only when the request asks for logprobs, as
a provider does.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Responder = Callable[[str], "dict[str, Any] | str | Scripted | Refusal"]


@dataclass(frozen=True)
class Refusal:
    """An HTTP error :class:`FakeOpenAIServer` answers with instead of a completion (429:
    rate limited, with ``Retry-After: 0`` so a client's backoff is short)."""

    status: int = 429
    message: str = "Rate limit reached; retry later."


@dataclass(frozen=True)
class Scripted:
    """A scripted answer with token log probabilities (OpenAI's shape: a list of
    ``{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}``, tokens spelling the
    answer's text)."""

    answer: dict[str, Any] | str
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.answer if isinstance(self.answer, str) else json.dumps(self.answer)


def with_levels(answer: dict[str, Any], probabilities: Mapping[str, float], *,
                field_name: str = "score") -> Scripted:
    """``answer`` with the log probabilities a model whose level distribution is
    ``probabilities`` (level label -> p) would report, one character per token.

    The text before the score is one certain token; then, along the written level, each
    position offers every next character of a level (and the closing quote where a level
    ends) with its conditional probability -- the chain rule a real tokenizer splits ``"10"``
    or ``"N/A"`` by. The closing quote is a token of its own, the rest of the text one more.
    """
    text = json.dumps(answer)
    value = str(answer[field_name])
    marker = f'"{field_name}": "'
    start = text.index(marker) + len(marker)
    if text[start:start + len(value) + 1] != value + '"':
        raise ValueError(f"{field_name!r} is not a JSON string in {text!r}")
    total = sum(probabilities.values())
    dist = {lab: p / total for lab, p in probabilities.items() if p > 0}

    def mass(prefix: str, exact: bool = False) -> float:
        return sum(p for lab, p in dist.items()
                   if (lab == prefix if exact else lab.startswith(prefix)))

    tokens = [{"token": text[:start], "logprob": 0.0, "top_logprobs": []}]
    for i in range(len(value) + 1):
        prefix = value[:i]
        here = mass(prefix)
        options: dict[str, float] = {}
        for lab in dist:
            if lab.startswith(prefix) and len(lab) > i:
                options[lab[i]] = mass(prefix + lab[i]) / here
        if mass(prefix, exact=True) > 0:
            options['"'] = mass(prefix, exact=True) / here
        chosen = value[i] if i < len(value) else '"'
        top = [{"token": tok, "logprob": math.log(p)} for tok, p in options.items() if p > 0]
        tokens.append({"token": chosen, "logprob": math.log(options[chosen]),
                       "top_logprobs": top})
    tokens.append({"token": text[start + len(value) + 1:], "logprob": 0.0, "top_logprobs": []})
    return Scripted(answer, tokens)


class ScriptedEngine:
    """A DSPy custom engine (``complete(Request) -> Response``) driven by a Python function.

    ``requests`` keeps each request's config (``logprobs`` asked, temperature ...)."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "logprobs",
                                  "top_logprobs"})

    def __init__(self, respond: Responder, *, context_window: int = 8192) -> None:
        self.respond = respond
        self.context_window = context_window
        self.calls = 0
        self.requests: list[Any] = []
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        prompt = request_text(request)
        answer = self.respond(prompt)
        logprobs = None
        if isinstance(answer, Scripted):
            if request.config.logprobs is not None:
                logprobs = _token_logprobs(answer.logprobs)
            answer = answer.answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        with self._lock:
            self.calls += 1
            self.requests.append(request.config)
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]),
                        finish_reason="stop",
                        usage=Usage(input_tokens=len(prompt) // 4, output_tokens=len(text) // 4),
                        logprobs=logprobs)

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1


def _token_logprobs(entries: Sequence[Mapping[str, Any]]) -> tuple[Any, ...]:
    """OpenAI-shaped entries as lm15 ``TokenLogprob`` objects (what an engine returns)."""
    from dspy.lm15 import TokenLogprob, TopLogprob

    return tuple(TokenLogprob(token=e["token"], logprob=float(e["logprob"]),
                              top=tuple(TopLogprob(token=t["token"], logprob=float(t["logprob"]))
                                        for t in e.get("top_logprobs") or ()))
                 for e in entries)


def request_text(request: Any) -> str:
    """System and message texts of a ``dspy.lm15.Request``, joined by blank lines."""
    parts: list[str] = []
    if request.system is not None:
        system = request.system
        parts.append(system if isinstance(system, str) else "".join(p.text for p in system))
    parts.extend(m.text or "" for m in request.messages)
    return "\n\n".join(parts)


def scripted_lm(respond: Responder, *, name: str = "scripted/test", context_window: int = 8192):
    """A ``dspy.LM`` answering with ``respond(prompt)``; DSPy's cache is off for it."""
    import dspy

    return dspy.LM(name, engine=ScriptedEngine(respond, context_window=context_window),
                   cache=False, temperature=0.0, max_tokens=512)


# A two-dimension rubric (one with N/A) for tests and examples.
TINY_RUBRIC = {
    "name": "tiny",
    "title": "Tiny test rubric",
    "description": "Judges short answers.",
    "scale": [1, 2, 3],
    "inputs": [{"name": "answer", "description": "the answer", "kind": "text"},
               {"name": "question", "description": "the question", "kind": "text",
                "required": False}],
    "dimensions": [
        {"id": "correctness", "name": "Correctness", "description": "Is the answer right?",
         "levels": {"1": "wrong", "2": "partly right", "3": "right"}},
        {"id": "clarity", "name": "Clarity", "description": "Is the answer clear?",
         "levels": {"1": "confusing", "2": "readable", "3": "crisp"},
         "na": "The answer is empty."},
    ],
}


def dimension_of(prompt: str) -> str | None:
    """Which dimension a judging prompt is about (from 'Judge one dimension only: X.')."""
    m = re.search(r"Judge one dimension only: ([^.]+)\.", prompt)
    return m.group(1) if m else None


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on 127.0.0.1 for tests that need a real HTTP LM
    (a subprocess, a Spark executor): ``POST /v1/chat/completions`` answers with
    ``respond(prompt)`` (a dict is sent as JSON text), where ``prompt`` is the messages'
    text joined as :func:`request_text` joins them. Use as a context manager; ``api_base``
    is the URL to configure (``[lm] model = "openai/fake"``, ``api_base = ...``).
    ``respond`` may return a :class:`Refusal` (an HTTP error such as 429); ``cached_tokens``
    is reported on every answer as ``usage.prompt_tokens_details.cached_tokens``.
    """

    def __init__(self, respond: Responder, *, cached_tokens: int = 0) -> None:
        self.respond = respond
        self.cached_tokens = cached_tokens  # reported as prompt-cache hits on every answer
        self.requests: list[dict[str, Any]] = []
        self._server: Any = None
        self._thread: Any = None

    @property
    def api_base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 -- http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append(body)
                prompt = "\n\n".join(_content_text(m.get("content"))
                                     for m in body.get("messages", []))
                answer = outer.respond(prompt)
                if isinstance(answer, Refusal):
                    error = json.dumps({"error": {"message": answer.message,
                                                  "type": "rate_limit_error",
                                                  "code": str(answer.status)}}).encode()
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                logprobs = None
                if isinstance(answer, Scripted):
                    if body.get("logprobs"):  # sent only when asked, as OpenAI does
                        logprobs = {"content": [{**e, "bytes": None} for e in answer.logprobs]}
                    answer = answer.answer
                text = answer if isinstance(answer, str) else json.dumps(answer)
                payload = json.dumps({
                    "id": f"fake-{len(outer.requests)}", "object": "chat.completion",
                    "created": 0, "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt) // 4,
                              "completion_tokens": len(text) // 4,
                              "total_tokens": (len(prompt) + len(text)) // 4,
                              "prompt_tokens_details": {"cached_tokens": outer.cached_tokens}},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class CharLlama:
    """A character-level stand-in for llama-cpp-python's ``Llama``, for tests of the embedded
    engine's token-level code: token id = byte value, the next-token logits depend on the last
    character only (``table``: character -> {next character: logit}, others -30), and
    ``create_completion`` writes ``replies`` in turn, one character per token, up to
    ``max_tokens`` and its first double quote. ``evaluated`` counts tokens run through the
    "network", ``generated`` tokens written by ``create_completion`` (the closing quote
    included when reached), ``budgets`` its ``max_tokens`` arguments."""

    def __init__(self, table: dict[str, dict[str, float]], replies: Sequence[str] = ()) -> None:
        import ctypes

        self.table, self.replies = table, list(replies)
        self.input_ids: list[int] = []
        self.n_tokens = 0
        self.evaluated = 0
        self.generated = 0
        self.budgets: list[int] = []
        self._logits = (ctypes.c_float * 128)()
        self._ctx = self

    def n_vocab(self) -> int:
        return 128

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        return list(text)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Any = None,
                   special: bool = False) -> bytes:
        return bytes(tokens)

    def eval(self, tokens: Sequence[int]) -> None:
        self.input_ids[self.n_tokens:] = list(tokens)
        self.n_tokens += len(tokens)
        self.evaluated += len(tokens)
        last = chr(self.input_ids[self.n_tokens - 1])
        for t in range(128):
            self._logits[t] = -30.0
        for ch, logit in self.table.get(last, {}).items():
            self._logits[ord(ch)] = logit

    def get_logits(self) -> Any:
        import ctypes

        return ctypes.cast(self._logits, ctypes.POINTER(ctypes.c_float))

    def create_completion(self, *, prompt: Sequence[int], max_tokens: int, stop: Any = None,
                          grammar: Any = None, **_: Any) -> dict[str, Any]:
        self.budgets.append(max_tokens)
        reply = self.replies.pop(0)
        body = reply.split('"')[0]
        written = body[:max_tokens]
        self.generated += len(written) + (1 if written == body and '"' in reply else 0)
        return {"choices": [{"text": written}]}

