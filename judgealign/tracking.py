"""MLflow tracking: alignment runs, cross-validation runs and the judge as an MLflow model.

* :func:`log_alignment` records one alignment: what was aligned with what (rubric, LM and
  embedder identity, memory settings, label counts: params), what came out of it (guidelines
  kept and rejected, episodes, the cost of the reflection calls: metrics) and the saved judge
  directory itself (artifacts under ``judge/``).
* :func:`log_cv` records a cross-validation result (anything with ``to_dict()``) and the
  report files written beside it.
* :func:`log_evaluation` records an evaluation of a judge on a labelled set
  (:func:`judgealign.evaluation.evaluate.evaluate`): per-dimension agreement of the judge and
  of the reference predictors, the comparisons, and ``evaluation.json``/``evaluation.md``.
* :func:`log_judge_model` logs a saved judge as an MLflow ``pyfunc`` model, optionally
  registered (:func:`save_judge_model` writes the same model to a local directory);
  :mod:`judgealign.serving` says which LM it judges with once served.

The run functions use an ``MlflowClient`` on ``settings.tracking.uri`` and the experiment
``settings.tracking.experiment`` (created when missing), so they change no global MLflow
state. They always log: checking ``settings.tracking.enabled`` is the caller's decision.
Everything works on local stores (``sqlite:///...``, file artifact roots) without network.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

KIND_TAG = "judgealign.kind"
# MLflow's limits (mlflow.utils.validation); batches above them are rejected.
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# The metrics of a cross-validation summary; other numbers in ``to_dict()`` are not metrics.
CV_METRICS = frozenset({"mae", "exact", "within_one", "qwk", "spearman", "diff", "ci_low",
                        "ci_high", "relative_reduction", "mae_a", "mae_b", "n", "n_items",
                        "n_failed", "n_scored", "n_na_confusion", "n_items_paired",
                        "cost_totals"})
# Per-fold and per-item detail stays in results.json; the run holds the summary.
_SKIP_KEYS = frozenset({"folds", "per_fold", "costs", "records", "align_reports", "items",
                        "per_item", "predictions", "rows"})
_CV_FILE_SUFFIXES = frozenset({".md", ".json", ".jsonl", ".png", ".svg", ".csv", ".html",
                               ".txt"})


# --- alignment runs ----------------------------------------------------------------------

def log_alignment(judge: Any, settings: Any, *, labels: Any = None,
                  artifact_dir: str | Path | None = None, run_name: str | None = None) -> str:
    """Log an alignment as an MLflow run; returns the run id.

    Parameters
    ----------
    judge
        An aligned :class:`~judgealign.program.RubricJudge`; its ``report`` (set by MemAlign)
        gives the cost metrics. A judge loaded from disk has no report: the one in its saved
        manifest is used instead.
    settings
        A :class:`~judgealign.config.Settings`: ``tracking.uri`` and ``tracking.experiment``
        say where the run goes; its public settings are logged as ``settings.json``.
    labels
        The :class:`~judgealign.labels.LabelSet` aligned with, for label counts.
    artifact_dir
        The saved judge to log as artifacts; ``None`` saves ``judge`` to a temporary
        directory first.
    """
    from judgealign.artifacts import read_manifest, save
    from judgealign.lm import lm_identity

    client, experiment_id = _client_and_experiment(settings)
    with tempfile.TemporaryDirectory(prefix="judgealign-") as tmp:
        if artifact_dir is None:
            artifact_dir = save(judge, Path(tmp) / "judge", config=settings)
        artifact_dir = Path(artifact_dir)
        manifest = read_manifest(artifact_dir)  # verifies: never log a corrupt judge
        report = _report_dict(judge) or manifest.get("report") or {}

        params: dict[str, Any] = {"rubric": judge.rubric.name,
                                  "dimensions": ",".join(judge.dimensions),
                                  "optimizer": report.get("optimizer", "unknown")}
        lm = judge.get_lm()
        params.update(_flatten({"lm": lm_identity(lm) if lm is not None
                                else manifest.get("lm") or "dspy-configured"}))
        memory = judge.memory
        embedder = memory.embedder.identity() if memory is not None else "none"
        params.update(_flatten({"embedder": embedder}))
        params.update(_flatten({"memory": report.get("settings")
                                or settings.memory.model_dump(mode="json")}))
        for dim, djudge in judge.judges.items():
            params[f"k.{dim}"] = djudge.k
        if labels is not None:
            params.update(_label_counts(labels, judge.dimensions))

        metrics = _alignment_metrics(judge, report)
        run = client.create_run(experiment_id, run_name=run_name or f"align-{judge.rubric.name}",
                                tags={KIND_TAG: "alignment", "judgealign.rubric":
                                      judge.rubric.name, "judgealign.version": _version()})
        run_id = run.info.run_id
        try:
            _log_params(client, run_id, params)
            _log_metrics(client, run_id, metrics)
            client.log_artifacts(run_id, str(artifact_dir), artifact_path="judge")
            if report:
                client.log_dict(run_id, report, "alignment_report.json")
            client.log_dict(run_id, settings.public_dict(), "settings.json")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
    return run_id


def _report_dict(judge: Any) -> dict[str, Any] | None:
    to_dict = getattr(getattr(judge, "report", None), "to_dict", None)
    return to_dict() if callable(to_dict) else None


def _label_counts(labels: Any, dimensions: list[str]) -> dict[str, int]:
    counts = {f"labels.{dim}": 0 for dim in dimensions}
    for lab in labels:
        key = f"labels.{lab.dimension}"
        counts[key] = counts.get(key, 0) + 1
    # Outside the labels.* namespace, so no dimension id can collide with them.
    counts["label_rows"] = len(labels)
    counts["label_items"] = len(getattr(labels, "item_ids", []) or [])
    return counts


def _alignment_metrics(judge: Any, report: Mapping[str, Any]) -> dict[str, float]:
    """What the judge holds now (guidelines, episodes) and what this alignment cost."""
    metrics: dict[str, float] = {}
    episodes = judge.memory.counts() if judge.memory is not None else {}
    for dim, djudge in judge.judges.items():
        metrics[f"guidelines_kept/{dim}"] = len(djudge.guidelines)
        metrics[f"guidelines_rejected/{dim}"] = len(djudge.rejected)
        metrics[f"episodes/{dim}"] = episodes.get(dim, 0)
    for key in ("lm_calls", "prompt_tokens", "completion_tokens", "seconds"):
        if _is_number(report.get(key)):
            metrics[f"cost/{key}"] = report[key]
    for rep in report.get("dimensions") or []:
        if not isinstance(rep, Mapping) or not isinstance(rep.get("dimension"), str):
            continue
        dim = rep["dimension"]
        for key in ("examples", "new_examples", "proposed", "kept", "unprocessed_examples",
                    "lm_calls", "prompt_tokens", "completion_tokens", "seconds"):
            if _is_number(rep.get(key)):
                metrics[f"compile/{key}/{dim}"] = rep[key]
        for reason, count in (rep.get("rejected") or {}).items():
            if _is_number(count):
                metrics[f"compile/rejected_{reason}/{dim}"] = count
    return {_metric_key(k): float(v) for k, v in metrics.items()}


# --- cross-validation runs ---------------------------------------------------------------

def log_cv(result: Any, out_dir: str | Path, settings: Any, *,
           run_name: str | None = None) -> str:
    """Log a cross-validation result as an MLflow run; returns the run id.

    ``result`` is duck-typed: only ``result.to_dict()`` is used. Every number under a key in
    :data:`CV_METRICS` becomes a metric named by its path, sanitised for MLflow, e.g.
    ``agreement/memalign/correctness/qwk`` or ``comparisons/memalign_vs_baseline/correctness/
    ci_low`` (list rows are named by their ``name``/``comparison``, ``variant`` and
    ``reference`` (or ``b`` and ``a``) and ``dimension`` fields, else by position); per-fold
    and per-item detail (``folds``, ``costs``, ``records``, ``align_reports``) is left to
    ``results.json``. Top-level scalars and a
    ``settings``/``config`` mapping become params. The report files in ``out_dir`` are logged
    as artifacts; ``results.json`` is written from ``to_dict()`` when ``out_dir`` has none.
    """
    data = result.to_dict()
    if not isinstance(data, Mapping):
        raise TypeError(f"{type(result).__name__}.to_dict() must return a mapping, "
                        f"got {type(data).__name__}")
    params: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str | int | float | bool) or value is None:
            params[str(key)] = value
        elif key in ("settings", "config", "params") and isinstance(value, Mapping):
            params.update(_flatten(value))
    metrics: dict[str, float] = {}
    for path, value in _cv_metrics(data):
        key = _metric_key("/".join(path))
        if key in metrics:  # two paths sanitised to one name: keep both, distinguishably
            key = _metric_key(f"{key}_{len(metrics)}")
        metrics[key] = value

    out = Path(out_dir)
    files = sorted(p for p in out.iterdir() if p.is_file() and p.suffix in _CV_FILE_SUFFIXES) \
        if out.is_dir() else []
    client, experiment_id = _client_and_experiment(settings)
    run = client.create_run(experiment_id, run_name=run_name or "cross-validation",
                            tags={KIND_TAG: "cv", "judgealign.version": _version()})
    run_id = run.info.run_id
    try:
        _log_params(client, run_id, params)
        _log_metrics(client, run_id, metrics)
        for file in files:
            client.log_artifact(run_id, str(file))
        if not any(f.name == "results.json" for f in files):
            client.log_dict(run_id, json.loads(json.dumps(data, default=str)), "results.json")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _cv_metrics(data: Any, path: tuple[str, ...] = (), metric: bool = False
                ) -> Iterator[tuple[tuple[str, ...], float]]:
    """(path, value) of every finite number under a key of :data:`CV_METRICS`: the key holds
    the number (``{"mae": 0.4}``) or a mapping of them (``{"mae": {"dim": 0.4}}``). In a list
    of rows (``[{"variant": ..., "mae": ...}]``) each row's own metric keys count."""
    if _is_number(data):
        if metric and math.isfinite(data):  # NaN (qwk of a constant) is no metric
            yield path, float(data)
    elif isinstance(data, Mapping):
        for key, value in data.items():
            key = str(key)
            if key not in _SKIP_KEYS:
                yield from _cv_metrics(value, (*path, key), metric or key in CV_METRICS)
    elif isinstance(data, list | tuple):
        for i, row in enumerate(data):
            yield from _cv_metrics(row, (*path, _row_name(row, i)), False)


def _row_name(row: Any, index: int) -> str:
    """A list row's name from its identifying fields, else its position."""
    if not isinstance(row, Mapping):
        return str(index)
    text = {k: v for k, v in row.items() if isinstance(v, str) and v}
    if "name" in text or "comparison" in text:
        parts = [text.get("name") or text["comparison"]]
    elif "variant" in text and "reference" in text:  # crossval: diff = variant - reference
        parts = [f"{text['variant']}_vs_{text['reference']}"]
    elif "a" in text and "b" in text:
        parts = [f"{text['b']}_vs_{text['a']}"]
    else:
        parts = [text["variant"]] if "variant" in text else []
    if "dimension" in text:
        parts.append(text["dimension"])
    return "/".join(parts) if parts else str(index)


# --- evaluation runs ---------------------------------------------------------------------

# Agreement fields logged as metrics for each (predictor, dimension) of an evaluation.
EVAL_METRICS = ("mae", "mae_scored", "exact", "within_one", "qwk", "spearman", "n_items",
                "n_failed", "n_scored", "n_na_confusion")


def log_evaluation(result: Any, settings: Any, *, run_name: str | None = None) -> str:
    """Log an evaluation (:class:`~judgealign.evaluation.evaluate.EvaluationResult`) as an
    MLflow run; returns the run id.

    Metrics: ``<dimension>/<field>`` for the judge and ``reference/<name>/<dimension>/<field>``
    for the reference predictors (fields: :data:`EVAL_METRICS`; undefined ones, NaN, are left
    out), ``comparison/<name>/<dimension>/{diff,ci_low,ci_high}`` for judge MAE minus
    reference MAE, and ``n_items``/``n_held_in``. Params: the rubric, the label sources, the
    judge's artifact hash and LM. Artifacts: ``evaluation.json`` and ``evaluation.md``.
    """
    metrics: dict[str, float] = {"n_items": float(result.n_items),
                                 "n_held_in": float(len(result.held_in_items))}
    for d in result.dimensions:
        metrics.update(_agreement_metrics(d.agreement, d.dimension))
    for d in result.references:
        metrics.update(_agreement_metrics(d.agreement, f"reference/{d.predictor}/{d.dimension}"))
    for c in result.comparisons:
        for key in ("diff", "ci_low", "ci_high"):
            value = getattr(c, key)
            if _is_number(value) and math.isfinite(value):
                metrics[f"comparison/{c.reference}/{c.dimension}/{key}"] = float(value)
    metrics = {_metric_key(k): v for k, v in metrics.items()}
    params: dict[str, Any] = {"rubric": result.rubric, "labels": result.labels,
                              "train": result.train or "none"}
    params.update(_flatten({"judge": {k: v for k, v in result.judge.items() if v is not None}}))

    client, experiment_id = _client_and_experiment(settings)
    run = client.create_run(experiment_id, run_name=run_name or f"evaluate-{result.rubric}",
                            tags={KIND_TAG: "evaluation", "judgealign.rubric": result.rubric,
                                  "judgealign.version": _version()})
    run_id = run.info.run_id
    try:
        _log_params(client, run_id, params)
        _log_metrics(client, run_id, metrics)
        with tempfile.TemporaryDirectory(prefix="judgealign-eval-") as tmp:
            for path in result.write(tmp):
                client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _agreement_metrics(agreement: Any, prefix: str) -> dict[str, float]:
    data = agreement.to_dict()
    return {f"{prefix}/{key}": float(data[key]) for key in EVAL_METRICS
            if _is_number(data.get(key)) and math.isfinite(data[key])}


# --- the judge as an MLflow model --------------------------------------------------------

def log_judge_model(judge_dir: str | Path, *, name: str = "judge",
                    registered_model_name: str | None = None, settings: Any = None,
                    pip_requirements: list[str] | None = None) -> str:
    """Log a saved judge as an MLflow ``pyfunc`` model; returns its model URI.

    The model is :class:`judgealign.serving.JudgePyfunc` with ``judge_dir`` as its artifact
    ``"judge"`` and a signature of string columns built from the rubric. It goes to the
    active run when there is one, else it is a logged model of its own. With ``settings``,
    the tracking URI and experiment are set from ``settings.tracking`` first (fluent MLflow
    state: ``pyfunc.log_model`` has no client form); without, MLflow's current ones are used.
    ``registered_model_name`` also registers it (works on sqlite stores). ``pip_requirements``
    defaults to the installed versions of judgealign and its main dependencies: given
    explicitly, so MLflow never infers them (inference imports the model and may need the
    network).
    """
    import mlflow

    kwargs = _pyfunc_kwargs(judge_dir, pip_requirements)
    if settings is not None:
        mlflow.set_tracking_uri(settings.tracking.uri)
        mlflow.set_experiment(settings.tracking.experiment)
    with warnings.catch_warnings():
        # No input example on purpose: MLflow would run predict on it, which needs an LM.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        info = mlflow.pyfunc.log_model(name=name, registered_model_name=registered_model_name,
                                       **kwargs)
    return info.model_uri


def save_judge_model(judge_dir: str | Path, path: str | Path, *,
                     pip_requirements: list[str] | None = None) -> Path:
    """Write a saved judge as an MLflow ``pyfunc`` model directory at ``path`` (which must not
    exist), without any tracking store: the model :func:`log_judge_model` logs. Returns
    ``path``; ``mlflow.pyfunc.load_model`` and ``spark_udf`` take it as a model URI."""
    import mlflow

    kwargs = _pyfunc_kwargs(judge_dir, pip_requirements)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(str(path), **kwargs)
    return Path(path)


def _pyfunc_kwargs(judge_dir: str | Path, pip_requirements: list[str] | None
                   ) -> dict[str, Any]:
    from judgealign.artifacts import read_manifest
    from judgealign.serving import JUDGE_ARTIFACT, JudgePyfunc, judge_signature
    from judgealign.signatures.rubric import rubric_from_dict

    judge_dir = Path(judge_dir).resolve()
    manifest = read_manifest(judge_dir)  # fail here, not in the serving process
    rubric = rubric_from_dict(manifest["rubric"], source=str(judge_dir))
    return {"python_model": JudgePyfunc(), "artifacts": {JUDGE_ARTIFACT: str(judge_dir)},
            "signature": judge_signature(rubric),
            "pip_requirements": pip_requirements or _pip_requirements()}


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("judgealign", "mlflow", "dspy", "chromadb", "scikit-learn", "pydantic",
                 "numpy", "pandas"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


# --- helpers -----------------------------------------------------------------------------

def _client_and_experiment(settings: Any) -> tuple[Any, str]:
    """A client on ``settings.tracking.uri`` and the id of its experiment (made if missing)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from judgealign.errors import ConfigError

    tracking = settings.tracking
    client = MlflowClient(tracking_uri=tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        try:
            return client, client.create_experiment(tracking.experiment)
        except MlflowException:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(tracking.experiment)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ConfigError(f"MLflow experiment {tracking.experiment!r} at {tracking.uri} is "
                          "deleted: restore it or set tracking.experiment to another name")
    return client, experiment.experiment_id


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys (``lm.model``); a non-mapping at the top is ``prefix``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + ".") if value else {name: "{}"})
        else:
            out[name] = value
    return out


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    entries: dict[str, Param] = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        name = _metric_key(key)
        entries[name] = Param(name, text[:_MAX_PARAM_VALUE])
    items = list(entries.values())
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + _PARAMS_PER_BATCH])


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
    for start in range(0, len(items), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[start:start + _METRICS_PER_BATCH])


def _metric_key(name: str) -> str:
    """A name MLflow accepts for a metric or param: safe characters, no empty, ``.`` or
    ``..`` path segment (MLflow rejects names that would resolve to another file path)."""
    segments = []
    for segment in str(name).split("/"):
        segment = re.sub(r"[^A-Za-z0-9_\-. ]", "_", segment).strip()
        if set(segment) == {"."}:
            segment = "_"
        if segment:
            segments.append(segment)
    return ("/".join(segments) or "_")[:_MAX_KEY].rstrip("/")


def _is_number(value: Any) -> bool:
    # numbers.Real also admits numpy scalars; bool is an int but never a metric.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _version() -> str:
    from judgealign import __version__

    return __version__


__all__ = ["CV_METRICS", "EVAL_METRICS", "KIND_TAG", "log_alignment", "log_cv",
           "log_evaluation", "log_judge_model", "save_judge_model"]
