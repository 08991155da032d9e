"""Evaluate a saved (or in-memory) judge on a labelled set, without aligning anything.

::

    result = judgealign.evaluate("judges/v1", "test_labels.jsonl", train="train_labels.jsonl")
    print(result.table())
    result.write("reports/eval-v1")          # evaluation.json + evaluation.md

The judge scores every labelled item on every labelled dimension once; per dimension the
result holds, against the (rater-aggregated) human scores:

* the agreement figures of :func:`judgealign.evaluation.metrics.agreement`: the headline MAE
  with failures and N/A mismatches *charged* (:data:`CHARGE_NOTE`), the MAE over the items
  both sides scored (secondary, labelled so), exact agreement, quadratic kappa, Spearman, and
  the counts of failed judgments and N/A mismatches beside them;
* the confusion matrix (rows: human level or N/A; columns: judge level, N/A or FAILED);
* with a training set, the two reference predictors of cross-validation, which need no LM
  (:mod:`judgealign.evaluation.variants`): ``constant`` (the training labels' lower median
  per dimension; N/A when most are N/A) and ``neighbours`` (the same over the ``k`` training
  items nearest by the judge's own embedder), fitted on the training items that are not
  evaluated, each with its agreement and a paired bootstrap CI of ``judge MAE - reference
  MAE`` on the same items;
* every disagreement (judge and human score, both rationales), worst first.

Items the judge was aligned on (in its episodic memory or its ledger) are flagged: the judge's
scores on them are not held-out, and the result says how many there were.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from judgealign.errors import ConfigError, LabelError
from judgealign.evaluation.bootstrap import paired_bootstrap
from judgealign.evaluation.metrics import Agreement, agreement, charged_errors
from judgealign.evaluation.report import md_table

FAILED = "FAILED"
NA_LABEL = "N/A"
REFERENCES = ("constant", "neighbours")
CHARGE_NOTE = ("MAE charges every item: a failed judgment, or N/A where the expert gave level "
               "h, costs the largest error any level could make there, max(h - lo, hi - h); a "
               "level or a failure where the expert said N/A costs the whole scale, hi - lo "
               "(lo, hi: the rubric's lowest and highest level). 'MAE scored' is the mean "
               "|human - judge| over the items both scored; exact, kappa and Spearman leave "
               "failed judgments out and the 'failed' column counts them.")


@dataclass(frozen=True)
class Judgment:
    """One item's judgment on one dimension next to the human score.

    ``human`` and ``judge`` are levels or ``None`` (N/A); ``judge`` is ``None`` too when
    ``failed``, and ``rationale`` then holds the error. ``charge`` is the item's term of the
    headline MAE.
    """

    item_id: str
    dimension: str
    human: int | None
    judge: int | None
    failed: bool
    charge: float
    rationale: str
    human_rationale: str
    held_in: bool = False

    @property
    def agrees(self) -> bool:
        return not self.failed and self.human == self.judge

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "dimension": self.dimension,
                "human": _label(self.human), "judge": FAILED if self.failed
                else _label(self.judge), "charge": self.charge, "rationale": self.rationale,
                "human_rationale": self.human_rationale, "held_in": self.held_in}


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (human, judge) labels: ``counts[r][c]`` items with human label ``rows[r]``
    and judge label ``columns[c]``. Rows: the levels, then N/A when the dimension allows it;
    columns: the same, then FAILED."""

    rows: list[str]
    columns: list[str]
    counts: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": self.columns, "counts": self.counts}

    def markdown(self) -> str:
        head = "| human \\ judge | " + " | ".join(self.columns) + " |"
        rule = "|---|" + "---|" * len(self.columns)
        body = [f"| {r} | " + " | ".join(str(c) for c in row) + " |"
                for r, row in zip(self.rows, self.counts, strict=True)]
        return "\n".join([head, rule, *body])


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of ``judge MAE - reference MAE`` (charged errors, same items)."""

    reference: str
    dimension: str
    diff: float
    ci_low: float
    ci_high: float
    n_items: int
    confidence: float
    n_resamples: int

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "dimension": self.dimension,
                "diff": _num(self.diff), "ci_low": _num(self.ci_low),
                "ci_high": _num(self.ci_high), "n_items": self.n_items,
                "confidence": self.confidence, "n_resamples": self.n_resamples}


@dataclass(frozen=True)
class DimensionEvaluation:
    """The judge's (or a reference predictor's) agreement on one dimension."""

    dimension: str
    predictor: str  # "judge", "constant" or "neighbours"
    agreement: Agreement
    confusion: ConfusionMatrix

    def to_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "predictor": self.predictor,
                **self.agreement.to_dict(), "confusion": self.confusion.to_dict()}


@dataclass
class EvaluationResult:
    """What :func:`evaluate` found; ``to_dict`` is what ``evaluation.json`` holds."""

    rubric: str
    judge: dict[str, Any]
    labels: str
    dimensions: list[DimensionEvaluation]
    judgments: list[Judgment]
    references: list[DimensionEvaluation] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    train: str | None = None
    held_in_items: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return len({j.item_id for j in self.judgments})

    def disagreements(self) -> list[Judgment]:
        """Every judgment that differs from the human (failures included), worst first:
        by charged error, then rubric order of the dimension, then item id."""
        order = {d.dimension: i for i, d in enumerate(self.dimensions)}
        return sorted((j for j in self.judgments if not j.agrees),
                      key=lambda j: (-j.charge, order.get(j.dimension, 0), j.item_id))

    def agreement_of(self, dimension: str, predictor: str = "judge") -> Agreement:
        for d in [*self.dimensions, *self.references]:
            if d.dimension == dimension and d.predictor == predictor:
                return d.agreement
        raise KeyError(f"no {predictor} evaluation of dimension {dimension!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "evaluation", "rubric": self.rubric, "judge": self.judge,
                "labels": self.labels, "train": self.train, "n_items": self.n_items,
                "charge": CHARGE_NOTE, "held_in_items": self.held_in_items,
                "notes": self.notes,
                "dimensions": [d.to_dict() for d in self.dimensions],
                "references": [d.to_dict() for d in self.references],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "disagreements": [j.to_dict() for j in self.disagreements()]}

    # --- rendering ------------------------------------------------------------------------

    def _summary_rows(self) -> list[list[str]]:
        rows = []
        for d in [*self.dimensions, *self.references]:
            a = d.agreement
            rows.append([d.dimension, d.predictor, _fmt(a.mae), _fmt(a.mae_scored),
                         _fmt(a.exact), _fmt(a.qwk), _fmt(a.spearman), str(a.n_items),
                         str(a.n_failed), str(a.n_na_confusion)])
        order = {d.dimension: i for i, d in enumerate(self.dimensions)}
        rank = {"judge": 0, "constant": 1, "neighbours": 2}
        return sorted(rows, key=lambda r: (order.get(r[0], 0), rank.get(r[1], 3)))

    _COMPARISON = ["dimension", "reference", "judge MAE - reference MAE", "95% CI", "n"]
    _HEADER = ["dimension", "predictor", "MAE (charged)", "MAE scored", "exact", "QWK",
               "Spearman", "n", "failed", "N/A mismatch"]

    def table(self, *, max_disagreements: int = 10) -> str:
        """A plain-text report for a terminal: summary, comparisons, confusion matrices and
        the worst ``max_disagreements`` disagreements."""
        lines = [f"judge of rubric {self.rubric!r} on {self.labels} ({self.n_items} items)"]
        lines += _text_table(self._HEADER, self._summary_rows()).splitlines()
        lines.append("")
        lines += _wrap(CHARGE_NOTE)
        if self.comparisons:
            lines.append("")
            lines += _text_table(self._COMPARISON,
                                 self._comparison_rows()).splitlines()
        for d in self.dimensions:
            lines += ["", f"confusion of {d.dimension} (rows: human, columns: judge)"]
            cm = d.confusion
            lines += _text_table(["human \\ judge", *cm.columns],
                                 [[r, *map(str, row)] for r, row in
                                  zip(cm.rows, cm.counts, strict=True)]).splitlines()
        worst = self.disagreements()
        lines += ["", f"disagreements: {len(worst)} (worst first)"]
        for j in worst[:max_disagreements]:
            judge = FAILED if j.failed else _label(j.judge)
            lines.append(f"  {j.item_id}  {j.dimension}: human {_label(j.human)}, judge "
                         f"{judge} (charge {j.charge:g})  {_one_line(j.rationale)}")
        if len(worst) > max_disagreements:
            lines.append(f"  ... {len(worst) - max_disagreements} more (all in evaluation.md)")
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines)

    def _comparison_rows(self) -> list[list[str]]:
        return [[c.dimension, c.reference, _fmt(c.diff, signed=True),
                 f"[{_fmt(c.ci_low, signed=True)}, {_fmt(c.ci_high, signed=True)}]",
                 str(c.n_items)] for c in self.comparisons]

    def to_markdown(self) -> str:
        out = [f"# Evaluation of a judge of rubric `{self.rubric}`", ""]
        judge_rows = [[k, f"`{v}`"] for k, v in self.judge.items() if v is not None]
        judge_rows += [["labels", f"`{self.labels}` ({self.n_items} items)"]]
        if self.train:
            judge_rows.append(["training set (reference predictors)", f"`{self.train}`"])
        out += [_md_table(["", ""], judge_rows), ""]
        if self.held_in_items:
            out += [f"**{len(self.held_in_items)} of the {self.n_items} items were used to "
                    "align this judge**: its scores on them are not held-out.", ""]
        out += ["## Agreement per dimension", "", _md_table(self._HEADER, self._summary_rows()),
                "", CHARGE_NOTE, ""]
        if self.comparisons:
            out += ["## Judge vs reference predictors", "",
                    "Paired bootstrap of the charged MAE difference on the same items "
                    "(negative: the judge is closer to the humans).", "",
                    _md_table(self._COMPARISON,
                              self._comparison_rows()), ""]
        out += ["## Confusion matrices", ""]
        for d in self.dimensions:
            out += [f"### {d.dimension}", "", d.confusion.markdown(), ""]
        worst = self.disagreements()
        out += [f"## Disagreements ({len(worst)}, worst first)", ""]
        rows = [[j.item_id, j.dimension, _label(j.human),
                 FAILED if j.failed else _label(j.judge), f"{j.charge:g}",
                 _md_cell(j.rationale), _md_cell(j.human_rationale)] for j in worst]
        out += [_md_table(["item", "dimension", "human", "judge", "charge", "judge's rationale",
                           "human rationale"], rows) if rows else "None.", ""]
        if self.notes:
            out += ["## Notes", "", *[f"* {n}" for n in self.notes], ""]
        return "\n".join(out)

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write ``evaluation.json`` and ``evaluation.md`` into ``out_dir``; returns both."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        js, md = out / "evaluation.json", out / "evaluation.md"
        js.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n",
                      encoding="utf-8")
        md.write_text(self.to_markdown(), encoding="utf-8")
        return [js, md]


# --- the evaluation ----------------------------------------------------------------------

def evaluate(judge: Any, labels: Any = None, *, train: Any = None, traces: Any = None,
             config: Any = None, dimensions: Iterable[str] | None = None,
             neighbours_k: int | None = None, bootstrap: int = 10_000, seed: int = 0,
             inputs_map: Mapping[str, str] | None = None, num_threads: int | None = None,
             progress: bool = False, log: bool = True) -> EvaluationResult:
    """Score ``judge`` on labelled items (no alignment) and compare it with the humans.

    Parameters
    ----------
    judge
        A :class:`~judgealign.program.RubricJudge` or the path of a saved judge (loaded with
        the LM of ``config``).
    labels
        A :class:`~judgealign.labels.LabelSet`, a ``.jsonl``/``.csv`` label file, or a list
        of label rows. Give either ``labels`` or ``traces``.
    train
        Labels (same forms) the reference predictors learn from; ``None``: no references.
    traces
        MLflow traces whose human assessments are the labels: a list of ``Trace`` objects,
        or the name (or id) of an experiment on ``config.tracking.uri``. A trace's item is
        read from its inputs and outputs as :meth:`RubricJudge.as_scorer` reads a row
        (``inputs_map`` as there).
    config
        :class:`~judgealign.config.Settings`, a TOML path or ``None`` (``./judgealign.toml``
        and the environment). With ``tracking.enabled`` (and ``log``) the evaluation is
        logged as an MLflow run.
    dimensions
        Evaluate only these (default: every dimension the labels cover).
    neighbours_k
        Neighbours of the ``neighbours`` reference (default: the judge's ``k`` for the
        dimension, at least 1).
    bootstrap, seed
        Resamples and seed of the paired bootstrap against the references (default 10,000, 0).
    num_threads, progress
        Passed to :meth:`RubricJudge.batch`.

    Returns
    -------
    EvaluationResult
        ``table()`` to print, ``write(dir)`` for evaluation.json/.md, ``to_dict()``.
    """
    from judgealign import build

    settings = build.settings_from(config)
    if isinstance(judge, str | Path):
        judge = build.load_judge(judge, config=settings)
    rubric = judge.rubric
    if (labels is None) == (traces is None):
        raise ConfigError("evaluate: give labels or traces (exactly one)")
    if traces is not None:
        traces = traces if isinstance(traces, str) else list(traces)
        labels = labels_from_traces(traces, rubric, settings, inputs_map)
        source = _traces_name(traces)
    else:
        labels, source = _labelset(labels, rubric), _source(labels)
    train_set = _labelset(train, rubric) if train is not None else None

    wanted = [d for d in rubric.dimension_ids if d in set(labels.dimensions)]
    if dimensions is not None:
        asked = [rubric.dimension(d).id for d in dimensions]
        missing = [d for d in asked if d not in wanted]
        if missing:
            raise LabelError(f"{source}: no labels for dimension(s) {missing}")
        wanted = [d for d in wanted if d in asked]
    if not wanted:
        raise LabelError(f"{source}: no labels for any dimension of rubric {rubric.name!r}")

    items = labels.items()
    ids = [i for i in labels.item_ids if any(i in labels.reference(d) for d in wanted)]
    results = judge.batch([dict(items[i]) for i in ids], item_ids=ids, dimensions=wanted,
                          num_threads=num_threads, progress=progress)
    by_id = {r.item_id: r for r in results}
    held_in = sorted(set(ids) & _aligned_items(judge))
    levels = list(rubric.scale)

    dims, judgments = [], []
    refs: list[DimensionEvaluation] = []
    comparisons: list[Comparison] = []
    notes: list[str] = []
    embedder = None
    why = _human_rationales(labels)
    for dim in wanted:
        truth = labels.reference(dim)
        dim_ids = [i for i in ids if i in truth]
        verdicts = [by_id[i][dim] for i in dim_ids]
        human = [truth[i] for i in dim_ids]
        predicted = [v.score for v in verdicts]
        failed = [v.failed for v in verdicts]
        charges = charged_errors(human, predicted, failed, levels=levels)
        allows_na = rubric.dimension(dim).allows_na
        dims.append(DimensionEvaluation(
            dim, "judge", agreement(human, predicted, levels=levels, failed=failed),
            confusion_matrix(human, predicted, failed, levels=levels, allow_na=allows_na)))
        for i, v, h, c in zip(dim_ids, verdicts, human, charges, strict=True):
            judgments.append(Judgment(i, dim, h, v.score, v.failed, float(c),
                                      (v.error or "") if v.failed else v.rationale,
                                      why.get((i, dim), ""), i in held_in))
        if train_set is None:
            continue
        if not train_set.reference(dim):
            notes.append(f"no training labels for {dim!r}: no reference predictors for it")
            continue
        k = neighbours_k or max(judge.judges[dim].k, 1)
        embedder = embedder or _embedder(judge, settings)
        predictions = reference_predictions(train_set, dim, {i: items[i] for i in dim_ids},
                                            embedder=embedder, k=k)
        for name in REFERENCES:
            # No training label left to fit (all evaluated): a failure, charged as one.
            missing = [i not in predictions[name] for i in dim_ids]
            guess = [predictions[name].get(i) for i in dim_ids]
            refs.append(DimensionEvaluation(
                dim, name, agreement(human, guess, levels=levels, failed=missing),
                confusion_matrix(human, guess, missing, levels=levels, allow_na=allows_na)))
            ref_charges = charged_errors(human, guess, missing, levels=levels)
            boot = paired_bootstrap(ref_charges, charges, n_resamples=bootstrap, seed=seed)
            comparisons.append(Comparison(name, dim, float(boot.diff[0]), float(boot.ci_low[0]),
                                          float(boot.ci_high[0]), len(dim_ids),
                                          boot.confidence, boot.n_resamples))
    if train_set is not None:
        overlap = sorted(set(ids) & set(train_set.item_ids))
        if overlap:
            notes.append(f"{len(overlap)} evaluated item(s) are in the training set too "
                         f"(e.g. {overlap[0]!r}); the reference predictors were fitted on the "
                         "other training items only")
    if held_in:
        message = (f"{len(held_in)} of the {len(ids)} evaluated items were used to align this "
                   f"judge (e.g. {held_in[0]!r}): its scores on them are not held-out")
        notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=2)

    result = EvaluationResult(rubric=rubric.name, judge=_judge_info(judge), labels=source,
                              dimensions=dims, judgments=judgments, references=refs,
                              comparisons=comparisons,
                              train=_source(train) if train is not None else None,
                              held_in_items=held_in, notes=notes)
    if log and settings.tracking.enabled:
        from judgealign.tracking import log_evaluation

        log_evaluation(result, settings)
    return result


def confusion_matrix(human: Sequence[int | None], judge: Sequence[int | None],
                     failed: Sequence[bool] | None, *, levels: Sequence[int],
                     allow_na: bool = True) -> ConfusionMatrix:
    """Counts of (human, judge) labels for one dimension (see :class:`ConfusionMatrix`).

    ``human`` and ``judge`` hold levels or ``None`` (N/A), one per item; ``failed[i]`` marks a
    failed judgment (its ``judge`` entry is ignored). An N/A on either side adds the N/A row
    and column even where ``allow_na`` is False, so no item is ever left out.
    """
    failed = list(failed) if failed is not None else [False] * len(human)
    has_na = allow_na or any(h is None for h in human) or \
        any(j is None and not f for j, f in zip(judge, failed, strict=True))
    names = [str(v) for v in sorted(levels)] + ([NA_LABEL] if has_na else [])
    rows, columns = names, [*names, FAILED]
    counts = [[0] * len(columns) for _ in rows]
    for h, j, f in zip(human, judge, failed, strict=True):
        c = columns.index(FAILED) if f else columns.index(_label(j))
        counts[rows.index(_label(h))][c] += 1
    return ConfusionMatrix(rows, columns, counts)


def reference_predictions(train: Any, dimension: str, items: Mapping[str, Mapping[str, str]],
                          *, embedder: Any, k: int = 3) -> dict[str, dict[str, int | None]]:
    """The reference predictors' scores of ``items`` on ``dimension``: cross-validation's
    :class:`~judgealign.evaluation.variants.ConstantPredictor` (the aggregate of the training
    labels: lower median, N/A when most say N/A) and
    :class:`~judgealign.evaluation.variants.NeighboursPredictor` (the same over the ``k``
    training items nearest by ``embedder``, ties by item id).

    Both are fitted on the training items that are not among ``items``, so no item is ever
    predicted from its own label. Returns ``{"constant": {item_id: score}, "neighbours":
    {...}}`` (``None``: N/A); an item is missing when nothing was left to fit.
    """
    from judgealign.evaluation.variants import (
        ConstantPredictor,
        NeighboursPredictor,
        embed_items,
    )
    from judgealign.memory.records import item_text

    fit = train.subset([i for i in train.item_ids if i not in items])
    ids = list(items)
    vectors = dict(embed_items(fit, embedder))
    if ids:
        query = _unit(embedder.embed([item_text(items[i]) for i in ids]))
        vectors.update(zip(ids, query, strict=True))
    predictors = {"constant": ConstantPredictor(fit, [dimension]),
                  "neighbours": NeighboursPredictor(fit, [dimension], vectors, k)}
    out: dict[str, dict[str, int | None]] = {}
    for name, predictor in predictors.items():
        out[name] = {}
        for item_id in ids:
            guess = predictor.predict(item_id, dimension)
            if guess is not None:
                out[name][item_id] = guess[0]
    return out


def labels_from_traces(traces: Any, rubric: Any, settings: Any,
                       inputs_map: Mapping[str, str] | None = None) -> Any:
    """A :class:`LabelSet` from MLflow traces' human assessments named after a dimension
    (:meth:`LabelSet.from_mlflow_traces` says which count).

    ``traces`` is a list of traces or an experiment name or id on ``settings.tracking.uri``
    (every trace of it). Each trace's item is read from its request (inputs) and response
    (outputs) as the scorer reads an evaluation row (:func:`judgealign.scorer.row_to_item`,
    with ``inputs_map``), so an agent's answer in the response is judged like in
    ``mlflow.genai.evaluate``; a trace that does not map is passed on as it is, and the label
    loader names it if it lacks a required input.
    """
    from types import SimpleNamespace

    from judgealign.errors import ItemError
    from judgealign.labels import LabelSet
    from judgealign.scorer import row_to_item

    if isinstance(traces, str):
        traces = experiment_traces(traces, settings.tracking.uri)
    mapped = []
    for trace in traces:
        data = getattr(trace, "data", None)
        try:
            item = row_to_item(rubric, _parsed(getattr(data, "request", None)),
                               _parsed(getattr(data, "response", None)), inputs_map)
        except ItemError:
            mapped.append(trace)
            continue
        mapped.append(SimpleNamespace(info=trace.info, data=SimpleNamespace(request=item)))
    return LabelSet.from_mlflow_traces(mapped, rubric=rubric)


def _parsed(value: Any) -> Any:
    """A trace's request/response: JSON text as data, anything else as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def experiment_traces(experiment: str, tracking_uri: str) -> list[Any]:
    """Every trace of an MLflow experiment (by name, else by id), oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            found = client.get_experiment(experiment)
        except Exception:  # MLflow raises its own not-found error for unknown ids
            found = None
    if found is None:
        raise ConfigError(f"no MLflow experiment named {experiment!r} at {tracking_uri}")
    out, token = [], None
    while True:
        page = client.search_traces(locations=[found.experiment_id], max_results=500,
                                    order_by=["timestamp_ms ASC"], page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


# --- helpers -----------------------------------------------------------------------------

def _labelset(labels: Any, rubric: Any) -> Any:
    from judgealign.labels import LabelSet

    if isinstance(labels, LabelSet):
        return labels.validate(rubric)
    if isinstance(labels, str | Path):
        return LabelSet.from_file(labels, rubric=rubric)
    return LabelSet.from_records(list(labels), rubric=rubric)


def _source(labels: Any) -> str:
    if isinstance(labels, str | Path):
        return str(labels)
    return f"{type(labels).__name__} of {len(labels)} labels" if hasattr(labels, "__len__") \
        else type(labels).__name__


def _traces_name(traces: Any) -> str:
    return f"MLflow experiment {traces!r}" if isinstance(traces, str) \
        else f"{len(traces)} MLflow traces"


def _human_rationales(labels: Any) -> dict[tuple[str, str], str]:
    return {(e.item_id, e.dimension): e.rationale for e in labels.episodes()}


def _aligned_items(judge: Any) -> set[str]:
    """Items the judge learnt from: its episodic memory and its ledger of distilled labels."""
    seen = {key.split("::", 1)[0] for key in (getattr(judge, "seen", None) or {})}
    memory = getattr(judge, "memory", None)
    item_ids = getattr(memory, "item_ids", None)
    return seen | (set(item_ids()) if callable(item_ids) else set())


def _embedder(judge: Any, settings: Any) -> Any:
    memory = getattr(judge, "memory", None)
    if memory is not None and getattr(memory, "embedder", None) is not None:
        return memory.embedder  # the judge's own notion of "similar"
    from judgealign import build

    return build.embedder(settings)


def _judge_info(judge: Any) -> dict[str, Any]:
    from judgealign.lm import lm_identity

    lm = judge.get_lm()
    memory = getattr(judge, "memory", None)
    return {"artifact_sha256": getattr(judge, "artifact_sha256", None),
            "lm": lm_identity(lm)["model"] if lm is not None else None,
            "episodes": len(memory) if memory is not None else 0,
            "guidelines": sum(len(j.guidelines) for j in judge.judges.values())}


def _unit(matrix: Any) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms == 0.0, 1.0, norms)


def _label(score: int | None) -> str:
    return NA_LABEL if score is None else str(score)


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _one_line(text: str, width: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _md_cell(text: str) -> str:
    return _one_line(text, 300).replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(md_table(header, rows))


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*row) for row in rows)])


def _wrap(text: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


__all__ = ["CHARGE_NOTE", "Comparison", "ConfusionMatrix", "DimensionEvaluation",
           "EvaluationResult", "Judgment", "confusion_matrix", "evaluate", "experiment_traces",
           "labels_from_traces", "reference_predictions"]
