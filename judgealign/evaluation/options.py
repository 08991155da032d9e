"""The options of a cross-validation, validated in one place before any work starts.

:class:`CVOptions` checks everything it can on its own when it is built (fold count, bootstrap
resamples, item limit, variant names, the checkpoint directory); :meth:`CVOptions.check_data`
checks what needs the labels and the rubric (enough distinct items for the folds, ``group_by``
naming one of the rubric's inputs) and runs before any LM, embedder or judge is built. Every
problem is a :class:`CVOptionsError` naming the option (and its ``judgealign cv`` flag), so the
CLI answers bad flags with one line and exit code 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from judgealign.errors import ConfigError

BASELINE = "baseline"
# Reference predictors: no LM call, computed on the same folds from training items only.
CONSTANT, NEIGHBOURS = "constant", "neighbours"
REFERENCES = (CONSTANT, NEIGHBOURS)
# The human-vs-human row (each rater against the aggregate of the other raters).
HUMAN = "human"
# group_by="id:REGEX" groups items by a part of their id (judgealign.evaluation.folds).
ID_PREFIX = "id:"


class CVOptionsError(ConfigError, ValueError):
    """A cross-validation option (or ``judgealign cv`` flag) is invalid.

    Also a ``ValueError``, which is what these checks raised before they had a class.
    """


def llm_variants() -> tuple[str, ...]:
    """Every variant name ``judgealign.build`` knows (runnable or reported as skipped)."""
    from judgealign import build

    return (*build.VARIANTS, *build.FEWSHOT_VARIANTS, *build.UNSUPPORTED_VARIANTS)


@dataclass(frozen=True)
class CVOptions:
    """How a cross-validation runs (what it evaluates is the settings' business).

    Attributes
    ----------
    folds : int, default 4
        K, the number of folds: ``2 <= folds <= distinct items`` (items with identical
        inputs count once). Flag ``--folds``.
    seed : int, default 0
        Seeds the folds, the bootstrap and the baselines' example order. Flag ``--seed``.
    group_by : str or None, default None
        An input field of the rubric (``"question"``, ``"reference"`` ...): items whose
        value of it is equal (after stripping whitespace) share a fold, as items with
        identical inputs always do; items with an empty value are not grouped by it. For
        sets where several answers respond to one question or passage (SQuALITY), so no
        sibling of a held-out answer sits in training. Checked against the rubric's inputs
        by :meth:`check_data`. Or ``"id:REGEX"``: items whose ids' first REGEX match (its
        first capture group, if any) is equal share a fold -- a relation no input carries,
        such as the story behind several questions (``"id:^sq-(\\d+)-"`` on SQuALITY).
        Flag ``--group-by``.
    variants : tuple of str, default ``("baseline", "memalign")``
        LLM variants in report order, names of :mod:`judgealign.build` (``baseline``,
        ``memalign``, ``semantic-only``, ``episodic-only``, the DSPy few-shot baselines;
        ``mipro``/``simba``/``gepa`` are reported as skipped). A reference name given here
        (``constant``, ``neighbours``) is moved to ``references``. Flag ``--variants``.
    references : tuple of str, default ``("constant", "neighbours")``
        Reference predictors computed beside the variants (no LM calls); ``()`` switches
        them off.
    human : bool, default True
        Add the human-vs-human row when some items have several raters.
    dimensions : tuple of str or None, default None
        Dimension ids to evaluate; ``None``: every dimension that has labels.
        Flag ``--dimensions``.
    limit : int or None, default None
        Use only the first ``limit`` items (in label order); ``limit >= folds``.
        Flag ``--limit``.
    n_bootstrap : int, default 10,000
        Paired bootstrap resamples, ``>= 1``. Flag ``--bootstrap``.
    confidence : float, default 0.95
        Level of every bootstrap interval, strictly between 0 and 1.
    progress : bool, default True
        Progress bars (fold x variant, alignment, judging).
    checkpoint_dir : Path or None, default None
        Write each finished (fold, variant) under ``checkpoint_dir/folds/``; must not be an
        existing file. Flag ``--out``.
    resume : bool, default False
        Reuse checkpoints whose fingerprint matches. Flag ``--resume``.
    """

    folds: int = 4
    seed: int = 0
    variants: tuple[str, ...] = (BASELINE, "memalign")
    references: tuple[str, ...] = REFERENCES
    human: bool = True
    dimensions: tuple[str, ...] | None = None
    limit: int | None = None
    n_bootstrap: int = 10_000
    confidence: float = 0.95
    progress: bool = True
    checkpoint_dir: Path | None = field(default=None)
    resume: bool = False
    group_by: str | None = None  # last, so positional construction keeps working

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ (sequences -> tuples, str -> Path).
        _int("folds", self.folds, "--folds", minimum=2)
        _int("seed", self.seed, "--seed")
        _int("n_bootstrap", self.n_bootstrap, "--bootstrap", minimum=1)
        if self.group_by is not None:
            if not isinstance(self.group_by, str) or not self.group_by.strip():
                raise CVOptionsError(f"group_by must be the name of an input field or "
                                     f"'id:REGEX', got {self.group_by!r} (--group-by)")
            object.__setattr__(self, "group_by", self.group_by.strip())
            if self.group_by.startswith(ID_PREFIX):
                try:
                    pattern = re.compile(self.group_by[len(ID_PREFIX):])
                except re.error as exc:
                    raise CVOptionsError(f"group_by {self.group_by!r}: not a regular "
                                         f"expression ({exc}) (--group-by)") from None
                if not self.group_by[len(ID_PREFIX):] or pattern.groups > 1:
                    raise CVOptionsError(f"group_by {self.group_by!r}: give a non-empty "
                                         "regular expression with at most one capture group "
                                         "(--group-by)")
        if self.limit is not None:
            _int("limit", self.limit, "--limit", minimum=1)
            if self.limit < self.folds:
                raise CVOptionsError(f"limit = {self.limit} leaves fewer items than the "
                                     f"{self.folds} folds (--limit must be >= --folds)")
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, int | float) \
                or not 0.0 < float(self.confidence) < 1.0 or math.isnan(self.confidence):
            raise CVOptionsError(f"confidence must be strictly between 0 and 1, got "
                                 f"{self.confidence!r}")
        for name in ("human", "progress", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise CVOptionsError(f"{name} must be True or False, got "
                                     f"{getattr(self, name)!r}")
        variants = _names("variants", self.variants, "--variants")
        references = _names("references", self.references, None)
        known = llm_variants()
        for name in references:
            if name not in REFERENCES:
                raise CVOptionsError(f"unknown reference predictor {name!r}; known: "
                                     f"{', '.join(REFERENCES)}")
        moved = [v for v in variants if v in REFERENCES]
        variants = [v for v in variants if v not in REFERENCES]
        if HUMAN in variants:
            raise CVOptionsError(f"{HUMAN!r} is not a variant: the human-vs-human row is added "
                                 "when items have several raters (option human)")
        unknown = [v for v in variants if v not in known]
        if unknown:
            raise CVOptionsError(f"unknown variant(s) {', '.join(map(repr, unknown))} "
                                 f"(--variants); known: {', '.join(known)}; reference "
                                 f"predictors: {', '.join(REFERENCES)}")
        references = [r for r in REFERENCES if r in references or r in moved]
        if not variants and not references:
            raise CVOptionsError("nothing to evaluate: no variant and no reference predictor "
                                 "(--variants)")
        object.__setattr__(self, "variants", tuple(variants))
        object.__setattr__(self, "references", tuple(references))
        if self.dimensions is not None:
            dims = _names("dimensions", self.dimensions, "--dimensions")
            object.__setattr__(self, "dimensions", tuple(dims) or None)
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, str | Path):
                raise CVOptionsError(f"checkpoint_dir must be a path, got "
                                     f"{self.checkpoint_dir!r}")
            path = Path(self.checkpoint_dir)
            for part in (path, *path.parents):
                if part.exists() and not part.is_dir():
                    raise CVOptionsError(f"checkpoint directory {path}: {part} is an existing "
                                         "file, not a directory (--out)")
            folds_dir = path / "folds"
            if folds_dir.exists() and not folds_dir.is_dir():
                raise CVOptionsError(f"checkpoint directory {path}: {folds_dir} is a file")
            object.__setattr__(self, "checkpoint_dir", path)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> CVOptions:
        """``CVOptions(**kwargs)``, with an unknown keyword reported as a CVOptionsError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise CVOptionsError(f"unknown cross-validation option(s) {unknown}; known: "
                                 f"{sorted(names)}")
        return cls(**kwargs)

    def check_data(self, n_units: int, n_items: int, *,
                   input_names: Sequence[str] | None = None) -> None:
        """Checks that need the (selected) labels and the rubric; run before anything is
        built.

        Parameters
        ----------
        n_units
            Distinct items once items with identical inputs (and, with ``group_by``, equal
            values of that field) are merged: what folds split.
        n_items
            Items after ``limit``.
        input_names
            The rubric's input names; when given, ``group_by`` must be one of them.
        """
        self.check_group_by(input_names)
        if n_items == 0:
            raise CVOptionsError("no labelled items left to cross-validate")
        if n_units < self.folds:
            same = (f"identical inputs or the same {self.group_by!r}" if self.group_by
                    else "identical inputs")
            dup = "" if n_units == n_items else (f" ({n_items} items, but items with "
                                                 f"{same} count once)")
            raise CVOptionsError(f"{self.folds} folds need at least {self.folds} distinct "
                                 f"items, got {n_units}{dup} (--folds)")

    def check_group_by(self, input_names: Sequence[str] | None) -> None:
        """Raise a :class:`CVOptionsError` when ``group_by`` is not one of ``input_names``
        (the rubric's inputs); nothing to check without ``group_by`` or ``input_names``, or
        for an ``id:REGEX`` (checked when the options are made)."""
        if (self.group_by is None or input_names is None
                or self.group_by.startswith(ID_PREFIX)):
            return
        names = list(input_names)
        if self.group_by not in names:
            raise CVOptionsError(f"group_by {self.group_by!r} is not an input of the rubric "
                                 f"(--group-by); inputs: {', '.join(names)}")


def _int(name: str, value: Any, flag: str, *, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CVOptionsError(f"{name} must be an integer, got {value!r} ({flag})")
    if minimum is not None and value < minimum:
        raise CVOptionsError(f"{name} must be >= {minimum}, got {value} ({flag})")


def _names(name: str, value: Any, flag: str | None) -> list[str]:
    where = f" ({flag})" if flag else ""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, Iterable):
        raise CVOptionsError(f"{name} must be a list of names, got {value!r}{where}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise CVOptionsError(f"{name}: {item!r} is not a name{where}")
        out.append(item.strip())
    return list(dict.fromkeys(out))


__all__ = ["BASELINE", "CONSTANT", "CVOptions", "CVOptionsError", "HUMAN", "NEIGHBOURS",
           "REFERENCES", "llm_variants"]
