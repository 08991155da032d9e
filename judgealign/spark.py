"""Batch scoring on Spark: a judge over a Spark DataFrame, through MLflow's ``spark_udf``.

::

    from judgealign.spark import score

    scored = score(df, "judges/v1", columns={"notebook": "nb_json"},
                   lm={"model": "openai/gpt-4.1-mini", "api_key_env": "OPENAI_API_KEY"})
    scored.select("item_id", "model_training", "model_training_rationale").show()

The judge becomes the MLflow ``pyfunc`` model of :mod:`judgealign.serving` (a saved judge is
written as a model directory first; a model URI such as ``models:/notebook-judge/3`` is used as
it is) and runs in ``mlflow.pyfunc.spark_udf`` with the current Python environment
(``env_manager="local"``): the executors need judgealign installed, as the driver.

Which LM the executors judge with is decided by :mod:`judgealign.serving`'s rule, in the
executor processes: ``lm`` (or, when it is ``None``, the driver's ``JUDGEALIGN_LM__*``
environment variables) is sent to them as ``JUDGEALIGN_LM__*`` variables with the UDF, so each
executor process builds its own LM from that configuration once and keeps the loaded judge for
every task it runs. Keys are never sent: the variable named by ``api_key_env`` must be set on
the executors (cluster environment, Databricks secrets) or passed explicitly in ``env``.
Concurrency: a hosted LM gets ``num_threads`` calls at a time per executor task (default 8);
the embedded model is one model per executor process, called in sequence.

The result is ``df`` with, for every dimension ``<dim>``, a string column ``<prefix><dim>``
(``"1"``, ``"2"``..., ``"N/A"`` or ``"FAILED"``) and ``<prefix><dim>_rationale`` (the
rationale, or the error of a failed judgment).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from judgealign.errors import ConfigError

ENV_PREFIX = "JUDGEALIGN_LM__"
_RESULT = "__judgealign_result"
_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:", "dbfs:", "s3://", "gs://",
                "wasbs://", "abfss://", "file://")


def score(df: Any, judge: Any, *, columns: Mapping[str, str] | None = None,
          item_id: str | None = "item_id", lm: Any = None, env: Mapping[str, str] | None = None,
          num_threads: int | None = None, prefix: str = "") -> Any:
    """Judge every row of the Spark DataFrame ``df``; returns ``df`` with the score columns.

    Parameters
    ----------
    df
        A ``pyspark.sql.DataFrame`` with a column per rubric input.
    judge
        A :class:`~judgealign.program.RubricJudge`, the path of a saved judge, or the URI of
        a judge logged with :func:`judgealign.tracking.log_judge_model` (``models:/...``,
        ``runs:/...``, or a local MLflow model directory).
    columns
        Rubric input name -> column of ``df`` (default: the column of the same name).
        Required inputs must be found; optional ones may be missing.
    item_id
        Column passed to the judge as the item id when ``df`` has it (default ``"item_id"``).
    lm
        The executors' LM: a model string, a dict of ``[lm]`` fields or an ``LMSettings``
        (``None``: the driver's ``JUDGEALIGN_LM__*`` variables, if any; else the executors'
        own configuration).
    env
        More environment variables for the executors (e.g. the API key variable).
    num_threads
        LM calls at a time per task (default: :data:`judgealign.serving.DEFAULT_THREADS`).
    prefix
        Prepended to the output column names.
    """
    import mlflow.pyfunc
    from pyspark.sql import functions as F  # noqa: N812 -- Spark's own idiom

    spark = df.sparkSession
    workdir = Path(tempfile.mkdtemp(prefix="judgealign-spark-"))
    try:
        model_uri = _model_uri(judge, workdir)
        signature = _signature(model_uri)
        inputs = [c.name for c in signature.inputs.inputs if c.name != "item_id"]
        required = {c.name for c in signature.inputs.inputs if c.required}
        mapping = dict(columns or {})
        unknown = sorted(set(mapping) - set(inputs))
        if unknown:
            raise ConfigError(f"columns: {unknown} are not inputs of this judge's rubric "
                              f"(inputs: {', '.join(inputs)})")
        fields = []
        for name in inputs:
            column = mapping.get(name, name)
            if column in df.columns:
                fields.append(F.col(column).cast("string").alias(name))
            elif name in required:
                raise ConfigError(f"the DataFrame has no column {column!r} for the rubric input "
                                  f"{name!r} (columns: {', '.join(df.columns)}); map it with "
                                  f"columns={{{name!r}: '<column>'}}")
        if item_id and item_id in df.columns:
            fields.append(F.col(item_id).cast("string").alias("item_id"))
        params = {"num_threads": int(num_threads)} if num_threads else None
        # spark_udf copies the model into a directory of its own here, so workdir may go.
        udf = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local", params=params,
                                      extra_env=executor_env(lm, env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    outputs = [c.name for c in signature.outputs.inputs]
    scored = df.withColumn(_RESULT, udf(F.struct(*fields)))
    return scored.select(*[F.col(f"`{c}`") for c in df.columns],
                         *[F.col(f"{_RESULT}.`{o}`").alias(prefix + o) for o in outputs])


def executor_env(lm: Any = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables sent to the executors with the UDF (no secrets unless they
    are in ``env``): ``JUDGEALIGN_LM__*`` from ``lm`` (see :func:`score`), then ``env``."""
    out: dict[str, str] = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no price-map download
    if lm is None:
        out.update({k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)})
    else:
        out.update(lm_env(lm))
    out.update({str(k): str(v) for k, v in (env or {}).items()})
    return out


def lm_env(lm: Any) -> dict[str, str]:
    """``JUDGEALIGN_LM__*`` variables that configure ``lm`` (a model string, a dict of
    ``[lm]`` fields or an ``LMSettings``); validated here, on the driver."""
    from pydantic import ValidationError

    from judgealign.config import LMSettings

    if isinstance(lm, str):
        lm = {"model": lm}
    data = lm.model_dump(exclude_unset=True) if isinstance(lm, LMSettings) else dict(lm)
    try:
        LMSettings(**data)
    except ValidationError as exc:
        raise ConfigError(f"lm: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    return {ENV_PREFIX + str(k).upper(): _env_value(v) for k, v in data.items()
            if v is not None}


def _env_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _model_uri(judge: Any, workdir: Path) -> str:
    """A model URI for ``judge``: written under ``workdir`` unless it is one already."""
    from judgealign.tracking import save_judge_model

    if isinstance(judge, str) and judge.startswith(_URI_SCHEMES):
        return judge
    if isinstance(judge, str | Path):
        path = Path(judge)
        if (path / "MLmodel").is_file():
            return str(path.resolve())
        if not path.is_dir():
            raise ConfigError(f"{path}: no saved judge or MLflow model there")
        judge_dir = path
    else:
        judge_dir = judge.save(workdir / "judge")
    return str(save_judge_model(judge_dir, workdir / "model"))


def _signature(model_uri: str) -> Any:
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.outputs is None:
        raise ConfigError(f"{model_uri}: the model has no signature; log it with "
                          "judgealign.tracking.log_judge_model")
    return signature


__all__ = ["ENV_PREFIX", "executor_env", "lm_env", "score"]
