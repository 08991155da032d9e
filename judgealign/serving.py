"""A saved judge as an MLflow ``pyfunc`` model (see :func:`judgealign.tracking.log_judge_model`).

The model carries the judge directory as its artifact ``"judge"``; loading it verifies that
directory like :func:`judgealign.load` does, and no judgealign object is pickled
except this small class (by reference, so the serving environment needs judgealign installed).

Which LM a served judge uses is decided once, when the model is loaded (the LM a judge was
aligned with is never saved, so it is never used implicitly):

1. the LM named by judgealign's configuration of the serving process, when it names one:
   ``JUDGEALIGN_LM__MODEL`` (with the other ``JUDGEALIGN_LM__*`` variables) or ``[lm] model``
   in ``./judgealign.toml``;
2. otherwise the LM configured in DSPy in the loading process
   (``dspy.configure(lm=...)`` before ``mlflow.pyfunc.load_model``);
3. otherwise the configuration's default LM (``local``, the embedded model).

``predict`` takes a DataFrame with one column per rubric input (optional inputs may be left
out, and an ``item_id`` column is allowed) and returns one row per input row with, for every
dimension ``<dim>``, the column ``<dim>`` (the score label: ``"1"``, ``"2"``..., ``"N/A"`` or
``"FAILED"``) and ``<dim>_rationale`` (the judge's rationale; for ``FAILED`` the error). The
parameter ``num_threads`` (default 8) is how many LM calls one ``predict`` makes at a time
(an in-process model that is not thread-safe is called in sequence whatever it says).

A process loads each saved judge once per LM: loading the model again (``mlflow.pyfunc.
spark_udf`` in local mode does so for every task) reuses the judge already loaded there, so an
executor process holds one judge and, for the embedded model, one model.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

JUDGE_ARTIFACT = "judge"
ITEM_ID_COLUMN = "item_id"
DEFAULT_THREADS = 8
# (judge dir, manifest sha256, LM settings, id of a DSPy-configured LM) -> loaded judge
_LOADED: dict[tuple[str, str, str, int], Any] = {}
_LOADED_LOCK = threading.Lock()


def choose_lm(settings: Any) -> Any:
    """The LM a served judge uses under the rule of this module's docstring.

    Returns a ``dspy.LM``, or ``None`` to let :func:`judgealign.build.load_judge` build the LM
    of ``settings``.
    """
    import dspy

    if "model" in settings.lm.model_fields_set:  # the configuration names an LM: it wins
        return None
    return dspy.settings.lm  # None falls through to the configuration's default


class JudgePyfunc(mlflow.pyfunc.PythonModel):
    """An MLflow ``PythonModel`` that serves a saved judgealign judge."""

    def __init__(self) -> None:
        self.judge: Any = None

    def load_context(self, context: Any) -> None:
        """Load and verify the judge artifact and attach its LM (see the module docstring)."""
        self.judge = load_served_judge(Path(context.artifacts[JUDGE_ARTIFACT]))

    # MLflow reads predict's type hints as a schema; pd.DataFrame is the one it leaves alone
    # (the schema comes from the rubric, see judge_signature).
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Judge every row of ``model_input``; one output row per input row."""
        if self.judge is None:  # predict without load_context: a programming error
            raise RuntimeError("JudgePyfunc.predict called before load_context")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        items, ids = [], []
        for row in frame.to_dict(orient="records"):
            item_id = row.pop(ITEM_ID_COLUMN, None)
            ids.append(None if _missing(item_id) else str(item_id))
            # Absent optional inputs arrive as None/NaN; the judge wants them left out.
            items.append({k: str(v) for k, v in row.items() if not _missing(v)})
        threads = int((params or {}).get("num_threads") or DEFAULT_THREADS)
        results = self.judge.batch(items, item_ids=ids, num_threads=threads) if items else []
        columns: dict[str, list[str]] = {}
        for dim in self.judge.dimensions:
            columns[dim] = [r[dim].label for r in results]
            columns[f"{dim}_rationale"] = [(r[dim].error or "") if r[dim].failed
                                           else r[dim].rationale for r in results]
        return pd.DataFrame(columns, index=frame.index)


def load_served_judge(judge_dir: Path) -> Any:
    """The judge at ``judge_dir`` with the LM of the module docstring's rule, loaded (and
    verified) once per process, judge content and LM."""
    from judgealign import build
    from judgealign.artifacts import open_saved
    from judgealign.config import load_config

    settings = load_config()
    lm = choose_lm(settings)
    key = (str(judge_dir.resolve()), open_saved(judge_dir).sha256,
           settings.lm.model_dump_json(), id(lm) if lm is not None else 0)
    with _LOADED_LOCK:
        judge = _LOADED.get(key)
        if judge is None:
            judge = build.load_judge(judge_dir, lm=lm, config=settings)
            _LOADED[key] = judge
    return judge


def judge_signature(rubric: Any) -> Any:
    """The model signature of a served judge of ``rubric``: string columns in and out, and
    the parameter ``num_threads``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = [ColSpec("string", spec.name, required=spec.required) for spec in rubric.inputs]
    inputs.append(ColSpec("string", ITEM_ID_COLUMN, required=False))
    outputs = []
    for dim in rubric.dimension_ids:
        outputs += [ColSpec("string", dim), ColSpec("string", f"{dim}_rationale")]
    params = ParamSchema([ParamSpec("num_threads", "long", DEFAULT_THREADS)])
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


__all__ = ["DEFAULT_THREADS", "JUDGE_ARTIFACT", "JudgePyfunc", "choose_lm", "judge_signature",
           "load_served_judge"]
