"""Rubric descriptions and the one code path that turns them into DSPy signatures.

A rubric is declared in TOML or YAML (or built in Python from the same pydantic models)::

    name = "ml_notebook"
    scale = [1, 2, 3]                 # ordered worst -> best
    [[inputs]]
    name = "notebook"
    kind = "notebook"                 # "notebook" (.ipynb/.py rendered with cell markers) or "text"
    [[dimensions]]
    id = "data_imputation"
    name = "Data Imputation"
    description = "How missing values are found and handled."
    na = "The data has no missing values and the notebook shows it checked."   # omit: no N/A
    [dimensions.levels]
    1 = "..."
    2 = "..."
    3 = "..."

Scores travel as strings (``"1"``, ``"2"``, ``"N/A"``) in signatures because a ``Literal`` of
strings is what DSPy parses reliably, what a JSON-schema grammar constrains cleanly, and what
survives a JSON save/load; :func:`parse_score` turns them back into ``int | None``.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from judgealign.errors import RubricError
from judgealign.textfiles import read_text, shown

NA = "N/A"
# N/A is written "N/A" or "NA", in any case, with surrounding blanks ignored. Nothing else is
# N/A: a blank cell, "none", "null" or "n.a." may be a missing value as easily as a verdict, so
# they are refused with a hint instead of being turned into N/A silently.
NA_SPELLINGS = frozenset({"n/a", "na"})
_NA_LOOKALIKES = frozenset({"", "none", "null", "nil", "nan", "n.a.", "n.a", "n/a.", "na.",
                            "not applicable", "-", "--", "?"})
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_BUILTIN_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_RESERVED_FIELDS = {"score", "rationale"}


class InputSpec(BaseModel):
    """One named input field of the items a rubric judges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    kind: Literal["notebook", "text"] = "text"
    required: bool = True

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _ID_RE.match(value) or value in _RESERVED_FIELDS:
            raise ValueError(
                f"input name {value!r} must be a lowercase identifier and not 'score'/'rationale'"
            )
        return value


class DimensionSpec(BaseModel):
    """One scored dimension: what it judges, what each level means, when N/A applies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    description: str
    levels: dict[int, str]
    na: str | None = Field(default=None, description="When N/A applies; None means never.")

    @field_validator("id")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"dimension id {value!r} must match {_ID_RE.pattern}")
        return value

    @property
    def allows_na(self) -> bool:
        return self.na is not None


class Rubric(BaseModel):
    """A named set of dimensions scored on one ordered integer scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str = ""
    description: str = ""
    scale: list[int]
    inputs: list[InputSpec]
    dimensions: list[DimensionSpec]

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        if len(self.scale) < 2 or sorted(set(self.scale)) != list(self.scale):
            raise ValueError(f"scale must list at least two distinct integers in increasing "
                             f"order, got {self.scale}")
        if not self.inputs:
            raise ValueError("a rubric needs at least one input")
        if not self.dimensions:
            raise ValueError("a rubric needs at least one dimension")
        for kind, names in (("input", [i.name for i in self.inputs]),
                            ("dimension", [d.id for d in self.dimensions])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} names: {dupes}")
        for dim in self.dimensions:
            if set(dim.levels) != set(self.scale):
                raise ValueError(f"dimension {dim.id!r} describes levels {sorted(dim.levels)} "
                                 f"but the scale is {self.scale}")
        return self

    def dimension(self, dim: str) -> DimensionSpec:
        """The dimension with this id (or display name, case-insensitive)."""
        key = normalize_dimension(dim)
        for spec in self.dimensions:
            if spec.id == key or normalize_dimension(spec.name) == key:
                return spec
        raise RubricError(f"rubric {self.name!r} has no dimension {dim!r}; "
                          f"known: {', '.join(d.id for d in self.dimensions)}")

    @property
    def dimension_ids(self) -> list[str]:
        return [d.id for d in self.dimensions]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]


def normalize_dimension(name: str) -> str:
    """'Data Imputation' and 'data-imputation' both become 'data_imputation'."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def score_choices(rubric: Rubric, dim: DimensionSpec) -> tuple[str, ...]:
    """The string values the judge may answer for a dimension, N/A last when allowed."""
    choices = tuple(str(level) for level in rubric.scale)
    return (*choices, NA) if dim.allows_na else choices


def parse_score(value: Any, *, scale: list[int] | None = None, allow_na: bool = True) -> int | None:
    """Turn a label or an LM answer into ``int`` (a level) or ``None`` (N/A).

    Accepted: an ``int`` (not ``bool``), an integral ``float`` (``2.0``), digits as text
    (``" 2 "``), ``None`` (Python's N/A) and the text ``"N/A"`` or ``"NA"`` in any case.
    Anything else raises ValueError naming the value; N/A look-alikes (``""``, ``"none"``,
    ``"null"``, ``"n.a."``, ``"not applicable"``, ...) say to write ``N/A``. ``scale`` checks the
    level, ``allow_na=False`` refuses N/A.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in NA_SPELLINGS):
        if not allow_na:
            raise ValueError(f"N/A is not allowed here (got {value!r})")
        return None
    if isinstance(value, bool):
        raise ValueError(f"score must be a level or N/A, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NA_LOOKALIKES:
            raise ValueError(f"score must be a level or N/A, got {_short(value)} (write "
                             f"{NA!r} for not applicable)")
        # At most 18 digits: int() of a longer string is slow (and refused past 4,300 digits)
        # and no scale has such levels.
        if not re.fullmatch(r"[+-]?\d{1,18}", text):
            raise ValueError(f"score must be a level or N/A, got {_short(value)}")
        value = int(text)
    if not isinstance(value, int):
        raise ValueError(f"score must be a level or N/A, got {_short(value)}")
    if scale is not None and value not in scale:
        raise ValueError(f"score {_short(value)} is not on the scale {scale}")
    return value


def _short(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters (a pasted notebook is not a message)."""
    try:
        text = repr(value)
    except ValueError:  # an int over Python's 4,300-digit str() limit
        return f"<an integer of about {value.bit_length() * 0.30103:.0f} digits>"
    return text if len(text) <= width else text[: width - 1] + "…"


def format_score(score: int | None) -> str:
    return NA if score is None else str(score)


# Two sentences of every dimension's instructions that joint mode (one call for all
# dimensions) replaces with one of its own.
ONE_DIMENSION = "Judge one dimension only: "
ANSWER_LINE = ("Answer with the score first, then a one-sentence rationale that cites the "
               "evidence (for notebooks: cell numbers).")


def instructions_for(rubric: Rubric, dim: DimensionSpec) -> str:
    """The base instructions of a dimension's signature, before any learned guideline."""
    lines = []
    if rubric.title or rubric.description:
        lines.append(" ".join(x for x in (rubric.title + "." if rubric.title else "",
                                         rubric.description) if x).strip())
    lines.append(f"{ONE_DIMENSION}{dim.name}. {dim.description}".strip())
    lines.append("Score levels:")
    for level in rubric.scale:
        lines.append(f"- {level}: {dim.levels[level]}")
    if dim.allows_na:
        lines.append(f"- {NA}: {dim.na}")
    lines.append(ANSWER_LINE)
    return "\n".join(lines)


def input_fields(rubric: Rubric) -> dict[str, tuple[Any, Any]]:
    """The rubric's inputs as signature fields (``str``, described, optional ones marked), in
    rubric order: the start of every judging signature, per dimension or joint."""
    import dspy  # heavy: imported only when a signature is built

    fields: dict[str, tuple[Any, Any]] = {}
    for inp in rubric.inputs:
        desc = inp.description or inp.name
        if not inp.required:
            desc += " (may be empty)"
        fields[inp.name] = (str, dspy.InputField(desc=desc))
    return fields


def build_signature(rubric: Rubric, dim: DimensionSpec | str) -> type:
    """Build the typed ``dspy.Signature`` of one dimension.

    Inputs are the rubric's inputs (``str``); outputs are ``score`` (a ``Literal`` of the
    level strings, plus ``"N/A"`` when allowed) and ``rationale`` (``str``), in that order so a
    truncated answer never loses the score. The docstring is the dimension's instructions.
    """
    import dspy  # heavy: imported only when a signature is built

    spec = dim if isinstance(dim, DimensionSpec) else rubric.dimension(dim)
    choices = score_choices(rubric, spec)
    fields = input_fields(rubric)
    fields["score"] = (Literal[choices], dspy.OutputField(  # type: ignore[valid-type]
        desc=f"one of: {', '.join(choices)}"))
    fields["rationale"] = (str, dspy.OutputField(desc="one sentence citing the evidence"))
    signature = dspy.make_signature(fields, instructions_for(rubric, spec),
                                    signature_name=_class_name(spec.id))
    return signature


def _class_name(dim_id: str) -> str:
    return "".join(part.capitalize() for part in dim_id.split("_")) + "Signature"


# --- loading rubric files ----------------------------------------------------------------------

def rubric_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Rubric:
    """Validate a rubric description; errors name the source and the field."""
    try:
        return Rubric.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise RubricError(f"invalid rubric in {source}: {problems}") from None


def load_rubric_file(path: str | Path) -> Rubric:
    """Read a rubric from a ``.toml``, ``.yaml`` or ``.yml`` file."""
    text = read_text(path, error=RubricError, what="rubric file")
    return _parse_rubric_text(text, suffix=Path(path).suffix.lower(), source=shown(path))


def _parse_rubric_text(text: str, *, suffix: str, source: str) -> Rubric:
    if suffix not in (".toml", ".yaml", ".yml"):
        raise RubricError(f"{source}: a rubric file must end in .toml, .yaml or .yml")
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except RecursionError:
        raise RubricError(f"cannot parse rubric file {source}: nested too deeply") from None
    except Exception as exc:  # any failure of the parser is a fault of this file
        # TOMLDecodeError, yaml.YAMLError, and ValueError from either parser turning a literal
        # into a value (an integer over 4,300 digits, a date that does not exist).
        raise RubricError(f"cannot parse rubric file {source}: {_first_lines(exc)}") from None
    if not isinstance(data, dict):
        raise RubricError(f"{source}: a rubric must be a mapping at the top level")
    bad = _lone_surrogate(data)
    if bad is not None:  # YAML's "\ud800" escape: a str no LM client or prompt can encode
        raise RubricError(f"invalid rubric in {source}: {bad or '(top level)'}: not valid "
                          "Unicode text (a lone surrogate escape)")
    return rubric_from_dict(data, source=source)


def _lone_surrogate(data: Any, loc: str = "") -> str | None:
    """The dotted location of the first text (key or value) that is not valid Unicode, if any.

    Parsed documents nest no deeper than their parser allowed, well under the stack limit.
    """
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return loc
        return None
    items: Any = ()
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    for key, value in items:
        here = f"{loc}.{key}" if loc else str(key)
        found = _lone_surrogate(key, here) if isinstance(key, str) else None
        if found is None:
            found = _lone_surrogate(value, here)
        if found is not None:
            return found
    return None


def _first_lines(exc: BaseException, lines: int = 4, width: int = 300) -> str:
    """A parser's message, kept short: YAML's quote the offending text over many lines."""
    text = " ".join(str(exc).splitlines()[:lines]) or type(exc).__name__
    return text if len(text) <= width else text[: width - 1] + "…"


def builtin_rubrics() -> list[str]:
    """Names of the rubrics shipped with judgealign."""
    root = resources.files("judgealign.signatures")
    return sorted(p.name.rsplit(".", 1)[0] for p in root.iterdir()
                  if p.name.endswith((".toml", ".yaml")))


@cache
def load_builtin(name: str) -> Rubric:
    """A shipped rubric by name (``ml_notebook``, ``code_usefulness``)."""
    if not _BUILTIN_NAME_RE.fullmatch(name):  # not a name: no file lookup at all
        raise RubricError(f"unknown rubric {shown(repr(name))}; built-in rubrics: "
                          f"{', '.join(builtin_rubrics()) or '(none)'}; or pass a .toml/.yaml "
                          "path")
    root = resources.files("judgealign.signatures")
    for suffix in (".toml", ".yaml"):
        res = root.joinpath(name + suffix)
        if res.is_file():
            return _parse_rubric_text(res.read_text(encoding="utf-8"), suffix=suffix,
                                      source=f"judgealign.signatures/{name}{suffix}")
    raise RubricError(f"unknown rubric {name!r}; built-in rubrics: "
                      f"{', '.join(builtin_rubrics()) or '(none)'}; or pass a .toml/.yaml path")


def resolve_rubric(name_or_path: str | Path | Rubric) -> Rubric:
    """A Rubric from itself, a built-in name, or a file path."""
    if isinstance(name_or_path, Rubric):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".toml", ".yaml", ".yml")) or "/" in text or "\\" in text:
        return load_rubric_file(text)
    return load_builtin(text)
