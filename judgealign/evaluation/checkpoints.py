"""Per-(fold, variant) checkpoints of a cross-validation, and the fingerprint that decides
whether one may be reused.

With a checkpoint directory, each finished (fold, variant) writes its held-out records, cost
and compile report to ``<dir>/folds/fold{f}-{variant}.json`` (atomically: a temporary file,
then a rename). With ``resume`` a file is reused only when

* it parses as JSON and validates against :class:`CheckpointFile` (a pydantic model: no
  extra key, no missing one, strict types), and
* its fingerprint equals the run's, its fold and variant are the expected ones, its records
  are exactly the fold's held-out (item, dimension) pairs with the labels' reference scores,
  and every score is a level of the scale (or N/A; a failed judgment has no score).

A file that fails any check is ignored with a :class:`CheckpointWarning` and recomputed (then
overwritten); it never crashes the run. A missing file or another fingerprint (settings
changed) is recomputed silently.

The fingerprint (:func:`fingerprint`) is a hash of everything that changes the answer: the
rubric, the labels' content, the dimensions, the folds and seed, the variant and fold, the
judge and reflection LMs (model, ``api_base`` and every other call parameter except secrets,
the engine's model file hash, the context window), the embedder, the variant's full settings
(``build.variant_settings(settings, variant).public_dict()`` without ``tracking``) and the
judgealign/DSPy versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from judgealign.evaluation.results import ItemRecord, RunCost, jsonable

CHECKPOINT_FORMAT = 2
# LM keyword arguments that hold secrets (or may): never hashed, never written.
_SECRET = re.compile(r"(^|_)(api_key|key|secret|password|token)$|^(extra_)?headers$",
                     re.IGNORECASE)


class CheckpointWarning(UserWarning):
    """A checkpoint file was invalid and is being recomputed."""


# --- the file format ----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CheckpointRecord(_Strict):
    """One held-out judgment as stored (the fields of :class:`ItemRecord`)."""

    item_id: str
    fold: int
    dimension: str
    variant: str
    human: int | None
    judge: int | None
    failed: bool
    rationale: str
    retrieved_ids: list[str]
    error: str | None
    rater: str | None = None


class CheckpointCost(_Strict):
    """The cost of the (fold, variant) as stored (the fields of :class:`RunCost`)."""

    fold: int
    variant: str
    align_calls: int = Field(ge=0)
    align_prompt_tokens: int = Field(ge=0)
    align_completion_tokens: int = Field(ge=0)
    align_seconds: float = Field(ge=0)
    judge_calls: int = Field(ge=0)
    judge_prompt_tokens: int = Field(ge=0)
    judge_completion_tokens: int = Field(ge=0)
    judge_seconds: float = Field(ge=0)
    train_items: int = Field(ge=0)
    test_items: int = Field(ge=0)
    reused: bool
    # Added after format 2 was first written: older checkpoints read as 0 (not reported).
    align_cached_prompt_tokens: int = Field(default=0, ge=0)
    judge_cached_prompt_tokens: int = Field(default=0, ge=0)


class CheckpointFile(_Strict):
    """A checkpoint file: format, fingerprint, which run, its cost, report and records."""

    format: Literal[2]
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    fold: int
    variant: str
    cost: CheckpointCost
    report: dict[str, Any] | None
    records: list[CheckpointRecord]


# --- fingerprints -------------------------------------------------------------------------


def lm_fingerprint(lm: Any) -> dict[str, Any]:
    """What identifies an LM's answers, without secrets: ``lm_identity`` (model, engine,
    model file hash), every call keyword argument but secrets (``api_base`` stays,
    ``api_key`` goes) and the context window. ``None`` for no LM."""
    if lm is None:
        return {"model": None}
    from judgealign.lm import lm_context_window, lm_identity

    kwargs = {k: _plain(v) for k, v in sorted((getattr(lm, "kwargs", None) or {}).items())
              if not _SECRET.search(str(k))}
    for attr in ("model_type", "cache", "num_retries"):
        if hasattr(lm, attr):
            kwargs.setdefault(attr, _plain(getattr(lm, attr)))
    return {**lm_identity(lm), "kwargs": kwargs, "context_window": lm_context_window(lm)}


def _plain(value: Any) -> Any:
    """JSON-able form of a keyword argument (nested secrets dropped)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if not _SECRET.search(str(k))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(type(value).__name__)


def embedder_fingerprint(embedder: Any) -> Any:
    ident = getattr(embedder, "identity", None)
    return ident() if callable(ident) else type(embedder).__name__


def variant_settings_fingerprint(settings: Any, variant: str) -> dict[str, Any]:
    """The variant's full settings as data, without ``tracking`` (it changes no answer)."""
    from judgealign import build

    data = build.variant_settings(settings, variant).public_dict()
    data.pop("tracking", None)
    return data


def sha(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def labels_fingerprint(labels: Any) -> str:
    """A hash of the labels' content (items, dimensions, scores, rationales, raters)."""
    rows = sorted((lab.item_id, lab.dimension, -1 if lab.score is None else lab.score,
                   lab.rationale, lab.rater or "", sha(dict(lab.inputs)))
                  for lab in labels)
    return sha(rows)


def fingerprint(run: Mapping[str, Any], *, variant: str, fold: int,
                variant_settings: Mapping[str, Any]) -> str:
    """The fingerprint of one (fold, variant).

    Parameters
    ----------
    run
        What is shared by every run of a cross-validation: ``rubric_sha256``,
        ``labels_sha256``, ``dimensions``, ``seed``, ``folds`` (item -> fold), ``lm``,
        ``reflection_lm`` (:func:`lm_fingerprint`), ``embedder``, ``versions``.
    variant, fold
        Which run.
    variant_settings
        :func:`variant_settings_fingerprint` of the variant.
    """
    keys = ("rubric_sha256", "labels_sha256", "dimensions", "seed", "folds", "lm",
            "reflection_lm", "embedder", "versions")
    return sha({"format": CHECKPOINT_FORMAT, "variant": variant, "fold": fold,
                "settings": dict(variant_settings), **{key: run[key] for key in keys}})


def versions() -> dict[str, str]:
    """Versions that shape the prompts: a checkpoint from other code is not reused."""
    import dspy

    from judgealign import __version__

    return {"judgealign": __version__, "dspy": str(getattr(dspy, "__version__", "?"))}


# --- the store ----------------------------------------------------------------------------


Saved = tuple[list[ItemRecord], RunCost, dict[str, Any] | None]


class Checkpoints:
    """Per-(fold, variant) result files under ``<dir>/folds/``; read only when resuming.

    Parameters
    ----------
    directory
        The checkpoint directory; ``None`` turns checkpoints off.
    resume
        Read existing files (otherwise they are only written).
    levels
        The rubric scale: stored scores must be among them.
    """

    def __init__(self, directory: str | Path | None, resume: bool,
                 levels: Sequence[int] = ()) -> None:
        self.dir = Path(directory) / "folds" if directory is not None else None
        self.resume = resume
        self.levels = {int(v) for v in levels}

    def path(self, fold: int, variant: str) -> Path:
        if self.dir is None:
            raise ValueError("checkpoints are off (no directory)")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", variant)
        return self.dir / f"fold{fold}-{safe}.json"

    def load(self, fold: int, variant: str, fingerprint: str,
             expected: Mapping[tuple[str, str], int | None]) -> Saved | None:
        """The saved run, or ``None`` (missing, other fingerprint, or invalid: warned).

        ``expected`` maps each held-out ``(item_id, dimension)`` of the fold to its
        reference score; the stored records must be exactly these.
        """
        if self.dir is None or not self.resume:
            return None
        path = self.path(fold, variant)
        if not path.exists():
            return None
        try:
            text = path.read_text(encoding="utf-8")
            data = CheckpointFile.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            return self._invalid(path, f"{where}: {first['msg']}")
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            return self._invalid(path, f"unreadable: {type(exc).__name__}")
        if data.fingerprint != fingerprint:
            return None  # other settings: recompute, silently
        problem = self._check(data, fold, variant, expected)
        if problem:
            return self._invalid(path, problem)
        records = [ItemRecord(**r.model_dump()) for r in data.records]
        cost = RunCost(**{**data.cost.model_dump(), "reused": True})
        return records, cost, data.report

    def _check(self, data: CheckpointFile, fold: int, variant: str,
               expected: Mapping[tuple[str, str], int | None]) -> str | None:
        if data.fold != fold or data.variant != variant:
            return f"holds fold {data.fold}, variant {data.variant!r}"
        if data.cost.fold != fold or data.cost.variant != variant:
            return "its cost belongs to another run"
        seen: set[tuple[str, str]] = set()
        for n, r in enumerate(data.records):
            key = (r.item_id, r.dimension)
            if r.fold != fold or r.variant != variant:
                return f"records[{n}] belongs to another run"
            if key not in expected:
                return f"records[{n}]: {r.item_id}/{r.dimension} is not held out in fold {fold}"
            if key in seen:
                return f"records[{n}]: {r.item_id}/{r.dimension} appears twice"
            seen.add(key)
            if r.human != expected[key]:
                return f"records[{n}]: human score {r.human} is not the labels' {expected[key]}"
            for name, value in (("human", r.human), ("judge", r.judge)):
                if value is not None and value not in self.levels:
                    return (f"records[{n}].{name} = {value} is not a level of the scale "
                            f"{sorted(self.levels)}")
            if r.failed and r.judge is not None:
                return f"records[{n}]: a failed judgment with a score"
        if len(seen) != len(expected):
            return f"{len(expected) - len(seen)} held-out judgment(s) missing"
        return None

    @staticmethod
    def _invalid(path: Path, reason: str) -> None:
        warnings.warn(f"checkpoint {path} is invalid ({reason}); ignoring it and recomputing "
                      "this fold", CheckpointWarning, stacklevel=3)
        return None

    def save(self, fold: int, variant: str, fingerprint: str, records: list[ItemRecord],
             cost: RunCost, report: dict[str, Any] | None) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(fold, variant)
        tmp = path.with_name(path.name + ".tmp")
        data = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "fold": fold,
                "variant": variant, "cost": cost.to_dict(),
                "report": jsonable(report) if report is not None else None,
                "records": [r.to_dict() for r in records]}
        tmp.write_text(json.dumps(jsonable(data), ensure_ascii=False, indent=1),
                       encoding="utf-8")
        os.replace(tmp, path)


__all__ = ["CHECKPOINT_FORMAT", "CheckpointFile", "CheckpointWarning", "Checkpoints",
           "embedder_fingerprint", "fingerprint", "labels_fingerprint", "lm_fingerprint",
           "sha", "variant_settings_fingerprint", "versions"]
