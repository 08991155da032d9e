"""What a cross-validation produces: held-out records, costs, and the :class:`CVResult`.

Everything here is plain data; ``CVResult.to_dict()`` is strictly JSON-able (NaN and inf
become ``null``), so ``results.json`` can be parsed by any JSON reader.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from judgealign.evaluation.metrics import Agreement
from judgealign.evaluation.options import BASELINE, HUMAN

# Values of ``CVResult.comparisons[*]["against"]``.
AGAINST_BASELINE = "baseline"
AGAINST_REFERENCE = "reference"


@dataclass
class ItemRecord:
    """One held-out judgment: the judge's score and the aggregated expert score.

    For a reference predictor ``judge`` is its prediction (never failed). For the
    human-vs-human row ``judge`` is one rater's score, ``human`` the aggregate of the other
    raters of the item and ``rater`` names the rater (``None`` everywhere else).
    """

    item_id: str
    fold: int
    dimension: str
    variant: str
    human: int | None
    judge: int | None
    failed: bool = False
    rationale: str = ""
    retrieved_ids: list[str] = field(default_factory=list)
    error: str | None = None
    rater: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunCost:
    """Cost of one (fold, variant): aligning on the training folds, judging the held-out one.

    ``align_*`` counts every call of the judge and reflection LMs while compiling (MemAlign's
    reflection calls, BootstrapFewShot's judge runs); ``judge_*`` the held-out judgments.
    ``*_cached_prompt_tokens`` are the prompt tokens the provider reported serving from its
    prompt cache (OpenAI ``cached_tokens``, Anthropic cache reads; 0 where not reported).
    ``reused`` is True when the run was read back from a checkpoint (its numbers are those of
    the run that wrote it).
    """

    fold: int
    variant: str
    align_calls: int = 0
    align_prompt_tokens: int = 0
    align_completion_tokens: int = 0
    align_seconds: float = 0.0
    judge_calls: int = 0
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    judge_seconds: float = 0.0
    train_items: int = 0
    test_items: int = 0
    reused: bool = False
    align_cached_prompt_tokens: int = 0
    judge_cached_prompt_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["align_seconds"] = round(self.align_seconds, 3)
        data["judge_seconds"] = round(self.judge_seconds, 3)
        return data


@dataclass
class CVResult:
    """Everything a cross-validation produced; ``to_dict()`` is strictly JSON-able.

    Attributes
    ----------
    settings
        How the run was made: rubric, folds, seed, variants, references, LMs, the full
        settings, bootstrap resamples ...
    folds
        ``item_id -> fold``.
    dimensions, variants
        Evaluated dimensions (rubric order) and LLM variants that ran (requested order).
    records
        Every held-out judgment (one per variant or reference x item x labelled dimension),
        then the human-vs-human pairs (one per rater x item with >= 2 raters x dimension).
    agreement
        ``(row, dimension) -> Agreement`` over the pooled held-out items (for ``human``:
        over the rater-vs-others pairs).
    mae
        One dict per (row, dimension): ``mae`` -- the headline, failures and N/A charged
        (see :mod:`judgealign.evaluation.metrics`) -- over all items, its bootstrap CI
        (``ci_low``, ``ci_high``), ``n``, ``n_failed``, and ``mae_scored`` (over the items
        both sides scored, secondary). ``kind`` is ``variant``, ``reference`` or ``human``.
    comparisons
        Paired bootstrap records on the charged errors of all items: every variant but
        baseline against ``baseline`` (``against == "baseline"``) and every variant against
        the better reference of the dimension (``against == "reference"``); ``reference``
        names the row compared with, ``diff`` is variant minus it (negative: fewer errors).
    costs
        One :class:`RunCost` per (fold, variant).
    skipped
        ``variant -> reason`` for requested variants that could not run.
    align_reports
        ``(variant, fold) -> compile report dict`` (MemAlign's guidelines, episodes ...).
    data
        A summary of the data set: items, labels, raters, per-dimension score counts.
    references
        Reference predictors that ran (``constant``, ``neighbours``).
    best_reference
        ``dimension -> reference`` with the lower pooled MAE (ties: the first listed).
    """

    settings: dict[str, Any]
    folds: dict[str, int]
    dimensions: list[str]
    variants: list[str]
    records: list[ItemRecord]
    agreement: dict[tuple[str, str], Agreement]
    mae: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    costs: list[RunCost]
    skipped: dict[str, str] = field(default_factory=dict)
    align_reports: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    best_reference: dict[str, str] = field(default_factory=dict)

    @property
    def baseline(self) -> str | None:
        return BASELINE if BASELINE in self.variants else None

    @property
    def has_human(self) -> bool:
        """True when the human-vs-human row was computed for some dimension."""
        return any(m["variant"] == HUMAN for m in self.mae)

    @property
    def rows(self) -> list[str]:
        """Rows of the report in order: variants, references, then ``human`` if present."""
        return [*self.variants, *self.references, *([HUMAN] if self.has_human else [])]

    def comparison(self, variant: str, dimension: str, against: str = AGAINST_BASELINE
                   ) -> dict[str, Any] | None:
        """The paired bootstrap record of ``variant`` vs ``against`` (``"baseline"`` or
        ``"reference"``: the better reference of the dimension) on ``dimension``."""
        return next((c for c in self.comparisons
                     if c["variant"] == variant and c["dimension"] == dimension
                     and c["against"] == against), None)

    def mae_of(self, variant: str, dimension: str) -> dict[str, Any] | None:
        return next((m for m in self.mae
                     if m["variant"] == variant and m["dimension"] == dimension), None)

    def cost_totals(self) -> dict[str, dict[str, float]]:
        """Per variant, the sum of every numeric cost field over its folds."""
        out: dict[str, dict[str, float]] = {}
        for c in self.costs:
            row = out.setdefault(c.variant, {})
            for key, value in c.to_dict().items():
                if key not in ("fold", "variant", "reused"):
                    row[key] = row.get(key, 0) + value
        return {v: out[v] for v in self.variants if v in out}

    def to_dict(self) -> dict[str, Any]:
        data = {
            "settings": self.settings,
            "folds": dict(sorted(self.folds.items())),
            "dimensions": list(self.dimensions),
            "variants": list(self.variants),
            "references": list(self.references),
            "best_reference": dict(self.best_reference),
            "skipped": dict(self.skipped),
            "data": self.data,
            "agreement": [{"variant": v, "dimension": d, **a.to_dict()}
                          for (v, d), a in self.agreement.items()],
            "mae": self.mae,
            "comparisons": self.comparisons,
            "costs": [c.to_dict() for c in self.costs],
            "cost_totals": self.cost_totals(),
            "align_reports": [{"variant": v, "fold": f, "report": r}
                              for (v, f), r in sorted(self.align_reports.items())],
            "records": [r.to_dict() for r in self.records],
        }
        return jsonable(data)


def jsonable(value: Any) -> Any:
    """Plain JSON data: NaN/inf become None, numpy scalars and tuples become Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


__all__ = ["AGAINST_BASELINE", "AGAINST_REFERENCE", "CVResult", "ItemRecord", "RunCost",
           "jsonable"]
