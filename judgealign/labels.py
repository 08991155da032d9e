"""Expert labels: loading, validation against a rubric, and rater aggregation.

A label is one rater's score (a level or N/A) and rationale for one item on one dimension.
Rows come from JSONL, CSV, a list of dicts or MLflow traces; each remembers where it came
from (``file:line``) so that every problem is reported where the user can fix it.

JSONL rows::

    {"item_id": "nb-001", "inputs": {"notebook": {"path": "notebooks/nb-001.ipynb"},
     "task": "..."}, "dimension": "data_imputation", "score": 2, "rationale": "...",
     "rater": "alice"}

``inputs`` maps input names to text, or to ``{"path": ...}`` for a file read like any judged
item (a notebook is rendered with cell markers). Without ``item_id`` the id is a hash of the
inputs.

Paths of inputs are relative to the label file's folder and must stay inside it, or inside the
``allowed_root`` the caller names: an absolute path, ``..`` or a symbolic link that leads
anywhere else (``/etc/hostname``, ``../../secrets``) is an error naming the row, so a label file
cannot make judgealign read, send to an LM and store files it was not meant to.

Scores are a level of the rubric's scale (an integer, ``2.0`` or ``"2"``) or N/A, written
``"N/A"`` or ``"NA"`` in any case. Nothing else means N/A: a blank CSV cell, JSON ``null``,
``""``, ``"none"``, ``"null"``, ``"n.a."`` or ``"not applicable"`` is an error naming the row
(Python's ``None`` is N/A only in :meth:`LabelSet.from_records`, where it is the library's
own spelling). Files are UTF-8; a byte-order mark is accepted.

Several raters on one item and dimension are aggregated by :func:`aggregate`: N/A when most
raters say N/A, otherwise the lower median of the numeric scores (an actual level, never a
half-step); every rationale is kept.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from judgealign.errors import ItemError, LabelError
from judgealign.items import item_id_for, read_item_file
from judgealign.memory.records import Episode
from judgealign.signatures.rubric import Rubric, RubricError, normalize_dimension, parse_score
from judgealign.textfiles import JSON_ERRORS, checked_path, describe_json_error, read_text, shown

_REQUIRED_KEYS = ("dimension", "score")
_CSV_META = ("item_id", "dimension", "score", "rationale", "rater")
# csv's default cell limit is 131,072 characters; a whole notebook pasted into a cell is
# longer. The file is in memory already, so the limit protects nothing here.
_CSV_FIELD_LIMIT = 2**31 - 1


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
                     strict: bool = False, allowed_root: str | Path | None = None,
                     none_is_na: bool = True) -> LabelSet:
        """Labels from dicts shaped like the JSONL rows; ``rubric`` validates them too.

        Parameters
        ----------
        records
            Row dicts (see the module docstring); each problem is reported as
            ``"{source} {n}"`` (n counts from 1).
        rubric
            When given, every label is validated against it (:meth:`validate`).
        base_dir
            Folder that ``{"path": ...}`` inputs are relative to; default: the working
            directory. Paths must resolve inside it or inside ``allowed_root``.
        strict
            Stop at the first bad row instead of listing all of them.
        allowed_root
            A second folder that input paths may lead into (symbolic links resolved).
        none_is_na
            Whether ``None`` as a score means N/A (default True, the library's N/A). The
            file loaders pass False: JSON ``null`` is more often a missing value than a verdict.
        """
        collector = _Problems(strict)
        labels = []
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        roots = _allowed_roots(base, allowed_root)
        files: dict[Path, str] = {}
        for where, row in _numbered(records, source):
            label = collector.attempt(where, lambda row=row, where=where:
                                      _parse_row(row, where, base, files, roots=roots,
                                                 none_is_na=none_is_na))
            if label is not None:
                labels.append(label)
        collector.raise_if_any(f"invalid labels in {source}")
        out = cls(labels)
        if not out.labels:
            raise LabelError(f"no labels in {source}")
        return out.validate(rubric, strict=strict) if rubric is not None else out

    @classmethod
    def from_file(cls, path: str | Path, *, rubric: Rubric | None = None,
                  strict: bool = False, allowed_root: str | Path | None = None) -> LabelSet:
        """Labels from a ``.csv`` file (:meth:`from_csv`) or else JSONL (:meth:`from_jsonl`)."""
        read = cls.from_csv if str(path).endswith(".csv") else cls.from_jsonl
        return read(path, rubric=rubric, strict=strict, allowed_root=allowed_root)

    @classmethod
    def from_jsonl(cls, path: str | Path, *, rubric: Rubric | None = None,
                   strict: bool = False, allowed_root: str | Path | None = None) -> LabelSet:
        """Labels from a JSONL file, one JSON object per line (blank lines are skipped).

        ``{"path": ...}`` inputs are relative to the file's folder and must stay inside it or
        inside ``allowed_root``. Every bad line is reported as ``file:line``; see the module
        docstring for scores and N/A.
        """
        path = checked_path(path, error=LabelError, what="label file")
        text = read_text(path, error=LabelError, what="label file")
        rows: list[tuple[str, Any]] = []
        # Lines end at "\n" only: str.splitlines() would also split inside a JSON string at
        # U+2028, U+0085 or a form feed, and report a valid row as broken.
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                rows.append((f"{shown(path)}:{number}", _json_row(line)))
        return cls.from_records(_Located(rows), rubric=rubric, base_dir=path.parent,
                                source=shown(path), strict=strict, allowed_root=allowed_root,
                                none_is_na=False)

    @classmethod
    def from_csv(cls, path: str | Path, *, rubric: Rubric | None = None,
                 strict: bool = False, allowed_root: str | Path | None = None) -> LabelSet:
        """Labels from a CSV file with a header row.

        Columns: ``dimension`` and ``score`` (required), ``item_id``, ``rationale``, ``rater``
        (optional) and one column per input (``notebook``, ...). A cell ``@path/to/file`` is
        read as a file (relative to the CSV's folder, inside it or ``allowed_root``); ``@@``
        starts a text that begins with a literal ``@``. A blank input cell leaves the input
        out; a blank ``score`` is an error (write ``N/A``). A row with more or fewer cells
        than the header, duplicate or unnamed columns (names are stripped of surrounding
        blanks) and a missing required column are errors naming the file and line. Cells may
        be of any length.
        """
        path = checked_path(path, error=LabelError, what="label file")
        text = read_text(path, error=LabelError, what="label file")
        where_file = shown(path)
        rows: list[tuple[str, Any]] = []
        previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
        try:
            reader = csv.reader(io.StringIO(text, newline=""))
            last_line = 0
            header: list[str] | None = None
            for cells in reader:
                first_line, last_line = last_line + 1, reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue  # a blank line
                if header is None:
                    header = _csv_header(cells, f"{where_file}:{first_line}")
                    continue
                rows.append((f"{where_file}:{first_line}", _csv_row(header, cells)))
        except csv.Error as exc:
            raise LabelError(f"{where_file}:{reader.line_num}: invalid CSV ({exc})") from None
        finally:
            csv.field_size_limit(previous)
        return cls.from_records(_Located(rows), rubric=rubric, base_dir=path.parent,
                                source=where_file, strict=strict, allowed_root=allowed_root,
                                none_is_na=False)

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


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys silently; a row with two scores is ambiguous.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _json_row(line: str) -> Any:
    try:
        return json.loads(line, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        return _Unparsed(f"the key {str(exc)!r} appears twice in one object")
    except json.JSONDecodeError as exc:
        return _Unparsed(f"invalid JSON ({exc.msg} at column {exc.colno})")
    except JSON_ERRORS as exc:  # a 5,000-digit number, nesting deeper than the stack
        return _Unparsed(f"invalid JSON ({describe_json_error(exc)})")


def _csv_header(cells: list[str], where: str) -> list[str]:
    """The column names; a malformed header is an error for the whole file."""
    names = [cell.strip() for cell in cells]
    unnamed = [str(i) for i, name in enumerate(names, start=1) if not name]
    if unnamed:
        raise LabelError(f"{where}: column(s) {', '.join(unnamed)} of the header have no name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LabelError(f"{where}: duplicate column(s) {dupes}")
    missing = [name for name in _REQUIRED_KEYS if name not in names]
    if missing:
        raise LabelError(f"{where}: missing column(s) {', '.join(repr(m) for m in missing)} "
                         f"(header: {', '.join(names)})")
    return names


def _csv_row(header: list[str], cells: list[str]) -> Any:
    """One CSV row as a JSONL-shaped dict, or :class:`_Unparsed` when its width is wrong."""
    if len(cells) != len(header):
        more = "more" if len(cells) > len(header) else "fewer"
        return _Unparsed(f"{len(cells)} cells, {more} than the {len(header)} columns of the "
                         "header (quote cells that contain commas)")
    record = dict(zip(header, cells, strict=True))
    row: dict[str, Any] = {k: record[k] for k in _CSV_META
                           if k in record and record[k].strip() != ""}
    row["score"] = record["score"]  # blank stays blank: an error, never N/A
    inputs: dict[str, Any] = {}
    for key, value in record.items():
        if key in _CSV_META or value == "":
            continue
        if value.startswith("@@"):
            inputs[key] = value[1:]
        elif value.startswith("@"):
            inputs[key] = {"path": value[1:]}
        else:
            inputs[key] = value
    row["inputs"] = inputs
    return row


def _allowed_roots(base: Path, allowed_root: str | Path | None) -> tuple[Path, ...]:
    """The folders input paths may resolve into: ``base`` and ``allowed_root`` (resolved)."""
    roots = [base]
    if allowed_root is not None:
        root = checked_path(allowed_root, error=LabelError, what="allowed root")
        if not root.is_dir():
            raise LabelError(f"allowed root {shown(root)} is not a folder")
        roots.append(root)
    try:
        return tuple(dict.fromkeys(r.resolve() for r in roots))
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError before Python 3.13
        raise LabelError(f"cannot resolve folder {shown(base)}: {exc}") from None


def _input_path(value: Mapping[str, Any], base: Path, roots: tuple[Path, ...]) -> Path:
    """The file a ``{"path": ...}`` input names, resolved, or LabelError when it leaves the
    allowed folders (symbolic links are followed before the check)."""
    extra = sorted(str(k) for k in value if k != "path")
    if extra:
        raise LabelError(f"{{'path': ...}} takes no other key (got {extra})")
    raw = value["path"]
    if not isinstance(raw, str) or not raw.strip():
        raise LabelError("'path' must be a non-empty file path")
    try:
        path = (base / checked_path(raw, error=LabelError, what="input")).resolve()
    except (OSError, RuntimeError) as exc:
        raise LabelError(f"cannot resolve path {shown(repr(raw))}: {exc}") from None
    if not any(path.is_relative_to(root) for root in roots):
        folders = " or ".join(shown(r) for r in roots)
        raise LabelError(f"path {shown(repr(raw))} leads outside {folders} (to {shown(path)}); "
                         "input files must be inside the label file's folder or an allowed "
                         "root (allowed_root=...)")
    return path


def _text(value: str, what: str) -> str:
    """``value`` when it is valid Unicode text. JSON's ``"\\ud800"`` escape (a lone surrogate)
    parses into a str that no UTF-8 encoder, LM client or store accepts later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LabelError(f"{what} is not valid Unicode text (a lone surrogate "
                         f"{value[exc.start]!r} at character {exc.start + 1})") from None
    return value


def _text_or_int(row: Mapping[str, Any], key: str) -> str | None:
    """An id-like field (``item_id``, ``rater``) as text; None when absent, null or blank."""
    value = row.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return _text(value, f"field {key!r}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return str(value)
    raise LabelError(f"field {key!r} must be text or an integer, got {type(value).__name__}")


def _parse_row(row: Any, where: str, base: Path, files: dict[Path, str], *,
               roots: tuple[Path, ...], none_is_na: bool = True) -> Label:
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
            try:
                path = _input_path(value, base, roots)
            except LabelError as exc:
                raise LabelError(f"input {str(name)!r}: {exc}") from None
            if path not in files:
                try:
                    files[path] = read_item_file(path)
                except ItemError as exc:
                    raise LabelError(f"input {str(name)!r}: {exc}") from None
            inputs[str(name)] = files[path]
        elif isinstance(value, str):
            inputs[str(name)] = _text(value, f"input {str(name)!r}")
        elif value is None:
            continue
        else:
            raise LabelError(f"input {str(name)!r} must be text or {{'path': ...}}")
    if row["score"] is None and not none_is_na:
        raise LabelError("field 'score' is null; write \"N/A\" for not applicable")
    try:
        score = parse_score(row["score"])
    except ValueError as exc:
        raise LabelError(f"field 'score': {exc}") from None
    dimension = row["dimension"]
    if not isinstance(dimension, str) or not dimension.strip():
        raise LabelError("field 'dimension' must be a non-empty string")
    rationale = row.get("rationale")
    if rationale is None:
        rationale = ""
    if not isinstance(rationale, str):
        raise LabelError("field 'rationale' must be text")
    _text(dimension, "field 'dimension'")
    _text(rationale, "field 'rationale'")
    item_id = _text_or_int(row, "item_id") or item_id_for(inputs)
    return Label(item_id=item_id, inputs=inputs, dimension=normalize_dimension(dimension),
                 score=score, rationale=rationale, rater=_text_or_int(row, "rater"),
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
