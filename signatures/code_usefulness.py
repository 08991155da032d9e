"""Usefulness of a generated code snippet for a natural-language intent, graded 0-4.

Built from ``code_usefulness.toml``; exercises a scale other than 1-3 end to end.
"""

from __future__ import annotations

from judgealign.signatures.rubric import build_signature, load_builtin

RUBRIC = load_builtin("code_usefulness")

Usefulness = build_signature(RUBRIC, "usefulness")

