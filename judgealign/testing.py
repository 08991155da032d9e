"""A scripted language model for tests: deterministic, offline, instant.

``scripted_lm(respond)`` returns a real ``dspy.LM`` whose engine calls ``respond(prompt)`` with
the whole prompt (system and user text joined) and sends back what it returns: a ``dict`` of
output fields (serialised as JSON, which every DSPy adapter parses) or a raw ``str``. Token
usage is counted as characters/4 so cost accounting has something to add up.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

Responder = Callable[[str], "dict[str, Any] | str"]


class ScriptedEngine:
    """A DSPy custom engine (``complete(Request) -> Response``) driven by a Python function."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens"})

    def __init__(self, respond: Responder, *, context_window: int = 8192) -> None:
        self.respond = respond
        self.context_window = context_window
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        prompt = request_text(request)
        answer = self.respond(prompt)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        with self._lock:
            self.calls += 1
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]),
                        finish_reason="stop",
                        usage=Usage(input_tokens=len(prompt) // 4, output_tokens=len(text) // 4))

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1


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
