"""Exceptions of judgealign: each message names the file, row or field a user must fix."""

from __future__ import annotations


class JudgeAlignError(Exception):
    """Base class of every error judgealign raises on purpose."""


class ConfigError(JudgeAlignError):
    """A configuration file, environment variable or flag is invalid."""


class RubricError(JudgeAlignError):
    """A rubric is unknown or its description is invalid."""


class ItemError(JudgeAlignError):
    """An item to judge (a notebook, a text field) cannot be read."""


class LabelError(JudgeAlignError):
    """One or more labels are invalid; ``problems`` lists every bad row."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            shown = "\n".join(f"  - {p}" for p in self.problems[:20])
            more = len(self.problems) - 20
            tail = f"\n  ... and {more} more" if more > 0 else ""
            message = f"{message}\n{shown}{tail}"
        super().__init__(message)


class LMError(JudgeAlignError):
    """A language model backend cannot be built or called."""


class ArtifactError(JudgeAlignError):
    """A saved judge is missing, corrupt, of another format or fails verification."""
