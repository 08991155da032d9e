"""Expert labels: loading, validation against a rubric, and rater aggregation.

A label is one rater's score (a level or N/A) and rationale for one item on one dimension.
Rows come from JSONL, CSV, a list of dicts or MLflow traces; each remembers where it came
from (``file:line``) so that every problem is reported where the user can fix it.

JSONL rows::

    {"item_id": "nb-001", "inputs": {"notebook": {"path": "notebooks/nb-001.ipynb"},
     "task": "..."}, "dimension": "data_imputation", "score": 2, "rationale": "...",
     "rater": "alice"}

``inputs`` maps input names to text, or to ``{"path": ...}`` (relative to the label file) for a
file read like any judged item. Without ``item_id`` the id is a hash of the inputs.

Several raters on one item and dimension are aggregated by :func:`aggregate`: N/A when most
raters say N/A, otherwise the lower median of the numeric scores (an actual level, never a
half-step); every rationale is kept.
"""

from __future__ import annotations

import csv
import json
import statistics
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from judgealign.errors import ItemError, LabelError
from judgealign.items import item_id_for, read_item_file
from judgealign.memory.episodic import Episode
from judgealign.signatures.rubric import Rubric, RubricError, normalize_dimension, parse_score

_REQUIRED_KEYS = ("dimension", "score")


@dataclass(frozen=True)
class Label:
    """One rater's judgement of one item on one dimension. ``score`` None means N/A."""

    item_id: str
    inputs: Mapping[str, str]
    dimension: str
    score: int | None
    rationale: str = ""
    rater: str | None = None
    source: str = ""  # "file:line" or "record 3"


class LabelSet:
    """A validated collection of labels. Build it with the ``from_*`` loaders."""

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        self.labels: list[Label] = list(labels)
        self._items: dict[str, Mapping[str, str]] = {}
        problems = []
        for lab in self.labels:
            known = self._items.setdefault(lab.item_id, lab.inputs)
            if dict(known) != dict(lab.inputs):
                problems.append(f"{lab.source}: item id {lab.item_id!r} was used before "
                                "with different content")
        if problems:
            raise LabelError("labels give one item id to different items", problems)

    # --- loaders ------------------------------------------------------------------------

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, rubric: Rubric | None = None,
                     base_dir: str | Path | None = None, source: str = "record",
                     strict: bool = False) -> LabelSet:
        """Labels from dicts shaped like the JSONL rows; ``rubric`` validates them too."""
        collector = _Problems(strict)
        labels = []
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        files: dict[Path, str] = {}
        for where, row in _numbered(records, source):
            label = collector.attempt(where, lambda row=row, where=where:
                                      _parse_row(row, where, base, files))
            if label is not None:
                labels.append(label)
        collector.raise_if_any(f"invalid labels in {source}")
        out = cls(labels)
        if not out.labels:
            raise LabelError(f"no labels in {source}")
        return out.validate(rubric, strict=strict) if rubric is not None else out

    @classmethod
    def from_jsonl(cls, path: str | Path, *, rubric: Rubric | None = None,
                   strict: bool = False) -> LabelSet:
        path = Path(path)
        if not path.is_file():
            raise LabelError(f"label file not found: {path}")
        rows: list[tuple[str, Any]] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                rows.append((f"{path}:{number}", _json_row(line)))
        return cls.from_records(_Located(rows), rubric=rubric, base_dir=path.parent,
                                source=str(path), strict=strict)

    @classmethod
    def from_csv(cls, path: str | Path, *, rubric: Rubric | None = None,
                 strict: bool = False) -> LabelSet:
        """CSV with columns item_id, dimension, score, rationale, rater and one column per
        input (``notebook``, ...); a cell ``@path/to/file`` is read as a file."""
        path = Path(path)
        if not path.is_file():
            raise LabelError(f"label file not found: {path}")
        meta = {"item_id", "dimension", "score", "rationale", "rater"}
        rows = []
        with path.open(newline="", encoding="utf-8") as fh:
            for number, rec in enumerate(csv.DictReader(fh), start=2):
                inputs: dict[str, Any] = {}
                for key, value in rec.items():
                    if key is None or key in meta:
                        continue
                    if value and value.startswith("@"):
                        inputs[key] = {"path": value[1:]}
                    elif value:
                        inputs[key] = value
                row = {k: rec.get(k) for k in meta if rec.get(k) not in (None, "")}
                row["inputs"] = inputs
                if "score" not in row:
                    row["score"] = rec.get("score")
                rows.append((f"{path}:{number}", row))
        return cls.from_records(_Located(rows), rubric=rubric, base_dir=path.parent,
                                source=str(path), strict=strict)

    @classmethod
    def from_mlflow_traces(cls, traces: Iterable[Any], *, rubric: Rubric,
                           input_field: str | None = None) -> LabelSet:
        """Labels from MLflow traces whose human assessments are named after a dimension.

        The trace's request becomes the item: a dict request maps onto the rubric's inputs by
        name; any other request fills ``input_field`` (default: the rubric's first input).
        A human feedback's value (or a human expectation's, MLflow's ground truth) is the
        score. Skipped: assessments by other sources (LLM judges, code), assessments named
        after no dimension, feedback superseded by ``mlflow.override_feedback`` (``valid`` is
        False) and feedback that only records an error.
        """
        rows: list[tuple[str, Any]] = []
        for trace in traces:
            info = trace.info
            request = _trace_request(trace)
            if isinstance(request, Mapping) and set(request) & set(rubric.input_names):
                # None is an absent optional input, not the text "None".
                inputs = {k: _as_text(v) for k, v in request.items()
                          if k in rubric.input_names and v is not None}
            else:
                inputs = {input_field or rubric.input_names[0]: _as_text(request)}
            for assessment in getattr(info, "assessments", None) or []:
                source = getattr(assessment, "source", None)
                if str(getattr(source, "source_type", "HUMAN")) != "HUMAN":
                    continue
                if getattr(assessment, "valid", None) is False:
                    continue  # overridden: the overriding assessment carries the label
                try:
                    dim = rubric.dimension(assessment.name).id
                except RubricError:
                    continue  # assessments of other things are not labels of this rubric
                feedback = getattr(assessment, "feedback", None)
                expectation = getattr(assessment, "expectation", None)
                if feedback is not None:
                    if getattr(feedback, "error", None) is not None and feedback.value is None:
                        continue  # a failed assessment, not an N/A verdict
                    value = feedback.value
                elif expectation is not None:
                    value = expectation.value
                else:
                    continue
                where = (f"mlflow trace {info.trace_id} assessment "
                         f"{getattr(assessment, 'assessment_id', None) or assessment.name}")
                rows.append((where, {"item_id": info.trace_id, "inputs": inputs,
                                     "dimension": dim, "score": value,
                                     "rationale": assessment.rationale or "",
                                     "rater": getattr(source, "source_id", None)}))
        return cls.from_records(_Located(rows), rubric=rubric, source="mlflow traces")

    # --- validation ---------------------------------------------------------------------

    def validate(self, rubric: Rubric, *, strict: bool = False) -> LabelSet:
        """Check every label against ``rubric``; returns a copy with canonical dimension ids.

        Reports, with file and line: unknown dimension, score off the scale, N/A where the
        dimension does not allow it, missing or unknown input fields, one rater giving two
        scores. Raises :class:`LabelError` listing all of them (``strict``: the first).
        """
        collector = _Problems(strict)
        out = []
        seen: dict[tuple[str, str, str | None], Label] = {}
        required = {i.name for i in rubric.inputs if i.required}
        known_inputs = set(rubric.input_names)
        for lab in self.labels:
            try:
                spec = rubric.dimension(lab.dimension)
            except RubricError:
                collector.add(f"{lab.source}: unknown dimension {lab.dimension!r} for rubric "
                              f"{rubric.name!r} (known: {', '.join(rubric.dimension_ids)})")
                continue
            if lab.score is not None and lab.score not in rubric.scale:
                collector.add(f"{lab.source}: score {lab.score} is not on the scale "
                              f"{rubric.scale}")
                continue
            if lab.score is None and not spec.allows_na:
                collector.add(f"{lab.source}: N/A is not allowed for dimension {spec.id!r}")
                continue
            missing = sorted(n for n in required if not str(lab.inputs.get(n, "")).strip())
            if missing:
                collector.add(f"{lab.source}: missing item text for input(s) {missing}")
                continue
            unknown = sorted(set(lab.inputs) - known_inputs)
            if unknown:
                collector.add(f"{lab.source}: input(s) {unknown} are not inputs of rubric "
                              f"{rubric.name!r} (inputs: {', '.join(rubric.input_names)})")
                continue
            key = (lab.item_id, spec.id, lab.rater)
            if lab.rater is not None and key in seen and seen[key].score != lab.score:
                collector.add(f"{lab.source}: rater {lab.rater!r} already scored item "
                              f"{lab.item_id!r} on {spec.id!r} differently at "
                              f"{seen[key].source}")
                continue
            seen[key] = lab
            out.append(replace(lab, dimension=spec.id))
        collector.raise_if_any(f"labels do not fit rubric {rubric.name!r}")
        return LabelSet(out)

    # --- views --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Label]:
        return iter(self.labels)

    @property
    def item_ids(self) -> list[str]:
        """Item ids in first-seen order."""
        return list(self._items)

    @property
    def dimensions(self) -> list[str]:
        return sorted({lab.dimension for lab in self.labels})

    def items(self) -> dict[str, Mapping[str, str]]:
        return dict(self._items)

    def subset(self, item_ids: Iterable[str]) -> LabelSet:
        keep = set(item_ids)
        return LabelSet(lab for lab in self.labels if lab.item_id in keep)

    def for_dimensions(self, dimensions: Iterable[str]) -> LabelSet:
        keep = set(dimensions)
        return LabelSet(lab for lab in self.labels if lab.dimension in keep)

    def episodes(self, dimension: str | None = None) -> list[Episode]:
        """One aggregated example per (item, dimension), sorted by item id then dimension."""
        groups: dict[tuple[str, str], list[Label]] = {}
        for lab in self.labels:
            if dimension is None or lab.dimension == dimension:
                groups.setdefault((lab.item_id, lab.dimension), []).append(lab)
        out = []
        for (item_id, dim), labs in sorted(groups.items()):
            rationales = list(dict.fromkeys(lab.rationale.strip() for lab in labs
                                            if lab.rationale.strip()))
            out.append(Episode(item_id=item_id, dimension=dim,
                               inputs=dict(self._items[item_id]),
                               score=aggregate([lab.score for lab in labs]),
                               rationale=" | ".join(rationales)))
        return out

    def reference(self, dimension: str) -> dict[str, int | None]:
        """The aggregated expert score per item of one dimension."""
        return {e.item_id: e.score for e in self.episodes(dimension)}


def aggregate(scores: Sequence[int | None]) -> int | None:
    """Several raters' scores as one: N/A if most say N/A, else the lower median."""
    numeric = [s for s in scores if s is not None]
    if len(numeric) * 2 < len(scores) or not numeric:
        return None
    return int(statistics.median_low(numeric))


# --- parsing helpers ----------------------------------------------------------------------


class _Located(list):
    """Rows that already carry their ``file:line``."""


def _numbered(records: Iterable[Any], source: str) -> Iterator[tuple[str, Any]]:
    if isinstance(records, _Located):
        yield from records
        return
    for number, row in enumerate(records, start=1):
        yield f"{source} {number}", row


@dataclass(frozen=True)
class _Unparsed:
    """A line that is not JSON: reported by the row parser with the other bad rows."""

    problem: str


def _json_row(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return _Unparsed(f"invalid JSON ({exc.msg} at column {exc.colno})")


def _parse_row(row: Any, where: str, base: Path, files: dict[Path, str]) -> Label:
    if isinstance(row, _Unparsed):
        raise LabelError(row.problem)
    if not isinstance(row, Mapping):
        raise LabelError("a label row must be a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in row]
    if missing:
        raise LabelError(f"missing field(s) {missing}")
    raw_inputs = row.get("inputs")
    if not isinstance(raw_inputs, Mapping) or not raw_inputs:
        raise LabelError("'inputs' must be a non-empty object of input name -> text")
    inputs: dict[str, str] = {}
    for name, value in raw_inputs.items():
        if isinstance(value, Mapping) and "path" in value:
            path = (base / str(value["path"])).resolve()
            if path not in files:
                try:
                    files[path] = read_item_file(path)
                except ItemError as exc:
                    raise LabelError(f"input {name!r}: {exc}") from None
            inputs[str(name)] = files[path]
        elif isinstance(value, str):
            inputs[str(name)] = value
        elif value is None:
            continue
        else:
            raise LabelError(f"input {name!r} must be text or {{'path': ...}}")
    try:
        score = parse_score(row["score"])
    except ValueError as exc:
        raise LabelError(f"field 'score': {exc}") from None
    dimension = row["dimension"]
    if not isinstance(dimension, str) or not dimension.strip():
        raise LabelError("field 'dimension' must be a non-empty string")
    rationale = row.get("rationale") or ""
    if not isinstance(rationale, str):
        raise LabelError("field 'rationale' must be text")
    item_id = row.get("item_id")
    item_id = str(item_id) if item_id not in (None, "") else item_id_for(inputs)
    rater = row.get("rater")
    return Label(item_id=item_id, inputs=inputs, dimension=normalize_dimension(dimension),
                 score=score, rationale=rationale, rater=None if rater is None else str(rater),
                 source=where)


class _Problems:
    """Collects bad rows; in strict mode the first one raises."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[str] = []

    def add(self, problem: str) -> None:
        if self.strict:
            raise LabelError(problem)
        self.items.append(problem)

    def attempt(self, where: str, fn: Any) -> Any:
        try:
            return fn()
        except LabelError as exc:
            self.add(f"{where}: {exc}")
            return None

    def raise_if_any(self, message: str) -> None:
        if self.items:
            raise LabelError(f"{message}: {len(self.items)} bad row(s)", self.items)


def _trace_request(trace: Any) -> Any:
    data = getattr(trace, "data", None)
    request = getattr(data, "request", None) if data is not None else None
    if isinstance(request, str):
        try:
            return json.loads(request)
        except json.JSONDecodeError:
            return request
    return request


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def warn_if_no_rationales(labels: LabelSet) -> bool:
    """Warn when every rationale is empty; semantic memory then learns from scores alone."""
    if labels.labels and not any(lab.rationale.strip() for lab in labels):
        warnings.warn("every label's rationale is empty: semantic memory will learn from "
                      "scores alone", UserWarning, stacklevel=3)
        return True
    return False
