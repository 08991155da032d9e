"""A judgealign judge as an MLflow GenAI scorer, for ``mlflow.genai.evaluate``.

::

    judge = judgealign.load("judges/v1")
    mlflow.genai.evaluate(data=rows, scorers=[judge.as_scorer()])

Each evaluation row is judged once on every dimension of the rubric; the scorer returns one
``mlflow.entities.Feedback`` per dimension, named ``<name>/<dimension>`` (``name`` defaults to
the rubric's name), so the feedback of two judges or two rubrics never collide:

* ``value``: the level (``int``) or ``"N/A"``;
* ``rationale``: the judge's rationale;
* ``source``: ``LLM_JUDGE`` with the judge LM's model string as its id;
* ``metadata`` (strings, as MLflow stores them): ``retrieved_ids`` (JSON list of the episodic
  examples shown to the judge); when the judgment carries them, ``probabilities`` (JSON: level
  label -> probability) with ``probabilities_source`` (``logprobs`` or ``sampled``),
  ``score_policy``, ``sampled_score`` (the level the LM wrote) and
  ``calibrated_probabilities``; ``judge_sha256`` (SHA-256 of the saved judge's manifest
  ``judge.json``, when the judge was loaded from disk; left out otherwise), ``rubric`` and
  ``dimension``.

A dimension the judge failed on becomes a ``Feedback`` with ``error`` set (code
``JUDGE_FAILED``, the judge's error as message) and no value; a row the judge cannot read at
all (a required rubric input missing) gives one such error feedback per dimension (code
``JUDGE_INPUT``). The scorer never raises for a row.

How a row fills the rubric's inputs (``inputs_map``)
----------------------------------------------------
``inputs_map`` maps a rubric input name to where its text is in the row: ``"inputs"`` or
``"outputs"`` (the whole value), or ``"inputs.<key>"`` / ``"outputs.<key>"`` (one key of a dict
value). Rubric inputs it does not name are found by default: the key of that name in the row's
``inputs`` dict, else in its ``outputs`` dict; and when ``outputs`` is not a dict (an agent's
plain answer), it fills the rubric's main input (its first required input) unless ``inputs``
already has a key of that name. Values that are not text are JSON-encoded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import AssessmentError, AssessmentSource, Feedback
from mlflow.genai.scorers import Scorer
from pydantic import PrivateAttr

from judgealign.errors import ConfigError, ItemError

FEEDBACK_ERROR_CODE = "JUDGE_FAILED"
INPUT_ERROR_CODE = "JUDGE_INPUT"
_SOURCES = ("inputs", "outputs")


class _NoUsageWarning(logging.Filter):
    """Drops DSPy's "Failed to set LM usage" warning. ``mlflow.genai.evaluate`` turns DSPy's
    usage tracking on, and a dimension judge returns a ``DimensionResult`` (not a
    ``dspy.Prediction``) by design, so DSPy would warn once per LM call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to set LM usage" not in record.getMessage()


def _quiet_usage_warning() -> None:
    logger = logging.getLogger("dspy.primitives.module")
    if not any(isinstance(f, _NoUsageWarning) for f in logger.filters):
        logger.addFilter(_NoUsageWarning())


def as_scorer(judge: Any, name: str | None = None, *,
              inputs_map: Mapping[str, str] | None = None, lm: Any = None,
              num_threads: int | None = None) -> JudgeScorer:
    """An MLflow GenAI scorer that judges every row with ``judge``.

    Parameters
    ----------
    judge
        A :class:`~judgealign.program.RubricJudge`, or the path of a saved judge (loaded with
        :func:`judgealign.load` and the configured LM).
    name
        The scorer's name and the prefix of its feedback names (default: the rubric's name).
    inputs_map
        Rubric input name -> ``"inputs"``, ``"outputs"``, ``"inputs.<key>"`` or
        ``"outputs.<key>"`` (see the module docstring for the defaults).
    lm
        The LM to judge with when the judge has none of its own (default: the judge's LM,
        else DSPy's configured LM, else the LM of ``./judgealign.toml`` / the environment).
    num_threads
        Threads judging one row's dimensions (default: :meth:`RubricJudge.batch`'s).

    Returns
    -------
    JudgeScorer
        A ``mlflow.genai.scorers.Scorer``: pass it in ``scorers=[...]``. It is not
        serialisable for ``Scorer.register`` (that needs a ``@scorer`` function's source).
    """
    if isinstance(judge, str | Path):
        from judgealign import load

        judge = load(judge)
    rubric = judge.rubric
    mapping = _check_inputs_map(inputs_map or {}, rubric)
    _quiet_usage_warning()
    scorer = JudgeScorer(name=name or rubric.name,
                         description=f"judgealign judge of rubric {rubric.name!r}: one feedback "
                                     f"per dimension ({', '.join(rubric.dimension_ids)})")
    scorer._judge = judge
    scorer._inputs_map = mapping
    scorer._lm = lm
    scorer._num_threads = num_threads
    return scorer


def _check_inputs_map(inputs_map: Mapping[str, str], rubric: Any) -> dict[str, str]:
    out = {}
    for field, where in inputs_map.items():
        if field not in rubric.input_names:
            raise ConfigError(f"inputs_map: {field!r} is not an input of rubric {rubric.name!r} "
                              f"(inputs: {', '.join(rubric.input_names)})")
        source, _, key = str(where).partition(".")
        if source not in _SOURCES or (not key and "." in str(where)):
            raise ConfigError(f"inputs_map[{field!r}] = {where!r}: expected 'inputs', "
                              "'outputs', 'inputs.<key>' or 'outputs.<key>'")
        out[field] = str(where)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)


def row_to_item(rubric: Any, inputs: Any, outputs: Any,
                inputs_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """The rubric's inputs from one evaluation row (the rules of the module docstring).

    Raises :class:`~judgealign.errors.ItemError` naming the missing field and where it was
    looked for.
    """
    row = {"inputs": inputs, "outputs": outputs}
    mapping = dict(inputs_map or {})
    item: dict[str, str] = {}
    for spec in rubric.inputs:
        where = mapping.get(spec.name)
        if where is not None:
            source, _, key = where.partition(".")
            value = row[source]
            if key:
                if not isinstance(value, Mapping) or key not in value:
                    if spec.required:
                        raise ItemError(f"rubric input {spec.name!r}: the row's {source} has "
                                        f"no key {key!r} (inputs_map[{spec.name!r}] = {where!r})")
                    continue
                value = value[key]
            if value is not None:
                item[spec.name] = _text(value)
            continue
        for source in _SOURCES:
            value = row[source]
            if isinstance(value, Mapping) and value.get(spec.name) is not None:
                item[spec.name] = _text(value[spec.name])
                break
    main = next((i.name for i in rubric.inputs if i.required), rubric.input_names[0])
    if main not in item and main not in mapping and outputs is not None \
            and not isinstance(outputs, Mapping):
        item[main] = _text(outputs)
    missing = [s.name for s in rubric.inputs if s.required and not item.get(s.name, "").strip()]
    if missing:
        raise ItemError(f"rubric {rubric.name!r} needs input(s) {missing}: not found as keys of "
                        "the row's inputs or outputs, and outputs is no plain answer; map them "
                        "with inputs_map={name: 'inputs.<key>' | 'outputs.<key>' | 'outputs'}")
    return item


class JudgeScorer(Scorer):
    """An MLflow scorer over a judgealign judge; build it with :func:`as_scorer`."""

    _judge: Any = PrivateAttr(default=None)
    _inputs_map: dict[str, str] = PrivateAttr(default_factory=dict)
    _lm: Any = PrivateAttr(default=None)
    _num_threads: int | None = PrivateAttr(default=None)

    def __call__(self, *, inputs: Any = None, outputs: Any = None,
                 trace: Any = None) -> list[Feedback]:
        """One ``Feedback`` per dimension of the judge's rubric, in rubric order."""
        trace_id = getattr(getattr(trace, "info", None), "trace_id", None)
        return score_row(self._judge, inputs, outputs, name=self.name,
                         inputs_map=self._inputs_map, lm=self._lm,
                         num_threads=self._num_threads, item_id=trace_id)


def _judge_lm(judge: Any, lm: Any) -> Any:
    """The judge's own LM, else ``lm``, else DSPy's, else the configured one: the rule of
    :meth:`RubricJudge.batch`, resolved once per row so every dimension uses the same LM."""
    import dspy

    from judgealign.lm import configured_lm

    return judge.get_lm() or lm or dspy.settings.lm or configured_lm()


def score_row(judge: Any, inputs: Any, outputs: Any, *, name: str,
              inputs_map: Mapping[str, str] | None = None, lm: Any = None,
              num_threads: int | None = None, item_id: str | None = None) -> list[Feedback]:
    """Judge one evaluation row; one ``Feedback`` per dimension, errors as error feedback."""
    import dspy

    from judgealign.errors import JudgeAlignError
    from judgealign.lm import lm_identity

    rubric = judge.rubric
    dims = judge.dimensions
    sha = getattr(judge, "artifact_sha256", None)
    try:
        chosen = _judge_lm(judge, lm)
        source_id = lm_identity(chosen)["model"]
    except JudgeAlignError as exc:  # an LM that cannot be built: every dimension says why
        return [_error(name, dim, rubric.name, sha, "JUDGE_LM", str(exc)) for dim in dims]
    source = AssessmentSource(source_type="LLM_JUDGE", source_id=source_id)
    try:
        item = row_to_item(rubric, inputs, outputs, inputs_map)
        with dspy.context(lm=chosen):
            result = judge.batch([item], item_ids=[item_id], num_threads=num_threads)[0]
    except ItemError as exc:
        return [_error(name, dim, rubric.name, sha, INPUT_ERROR_CODE, str(exc), source)
                for dim in dims]
    except Exception as exc:  # a scorer must not sink mlflow.genai.evaluate
        return [_error(name, dim, rubric.name, sha, FEEDBACK_ERROR_CODE,
                       f"{type(exc).__name__}: {exc}", source) for dim in dims]
    out = []
    for dim in dims:
        res = result[dim]
        metadata = _metadata(rubric.name, dim, sha)
        metadata["retrieved_ids"] = json.dumps(list(res.retrieved_ids))
        metadata.update(_judgment_metadata(res))
        if res.failed:
            out.append(Feedback(name=f"{name}/{dim}", source=source, metadata=metadata,
                                error=AssessmentError(error_code=FEEDBACK_ERROR_CODE,
                                                      error_message=res.error or "failed")))
        else:
            out.append(Feedback(name=f"{name}/{dim}", source=source, metadata=metadata,
                                value=res.score if res.score is not None else "N/A",
                                rationale=res.rationale))
    return out


def _judgment_metadata(res: Any) -> dict[str, str]:
    """What a judgment carries beyond its score (:class:`DimensionResult`), as strings:
    level probabilities and their source, the score policy, the level the LM wrote, the
    calibrated distribution. Fields a judgment lacks (or leaves empty) are left out."""
    out: dict[str, str] = {}
    for key, field in (("probabilities", "probabilities"),
                       ("calibrated_probabilities", "calibrated")):
        value = getattr(res, field, None)
        if value:
            out[key] = json.dumps(_plain(value), sort_keys=True)
    for key, field in (("probabilities_source", "probabilities_source"),
                       ("score_policy", "policy"), ("sampled_score", "sampled_score")):
        value = getattr(res, field, None)
        if value is not None:
            out[key] = str(value)
    return out


def _metadata(rubric: str, dim: str, sha: str | None) -> dict[str, str]:
    meta = {"rubric": rubric, "dimension": dim}
    if sha:
        meta["judge_sha256"] = sha
    return meta


def _error(name: str, dim: str, rubric: str, sha: str | None, code: str, message: str,
           source: Any = None) -> Feedback:
    source = source or AssessmentSource(source_type="LLM_JUDGE", source_id="judgealign")
    return Feedback(name=f"{name}/{dim}", source=source, metadata=_metadata(rubric, dim, sha),
                    error=AssessmentError(error_code=code, error_message=message[:2000]))


def _plain(value: Any) -> Any:
    """JSON-able copy of probabilities/policies (dataclasses, numpy numbers, int keys)."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        value = to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


__all__ = ["FEEDBACK_ERROR_CODE", "INPUT_ERROR_CODE", "JudgeScorer", "as_scorer",
           "row_to_item", "score_row"]
