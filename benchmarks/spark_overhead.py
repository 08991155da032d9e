"""Scoring on Spark local[2] vs ``judge.batch`` on the same rows, and where Spark's time goes.

Run from the repository root (needs the ``spark`` extra and a Java runtime)::

    python -m benchmarks.spark_overhead              # 200 rows, writes its BENCHMARKS.md section
    python -m benchmarks.spark_overhead --quick      # 20 rows
    python -m benchmarks.spark_overhead --no-write   # print only, leave BENCHMARKS.md alone

The LM is an OpenAI-compatible fake served on 127.0.0.1 by this script (instant answers, or
``--latency-ms`` per call), never a real model: the numbers are the machinery's cost. The judge
is the tiny two-dimension test rubric with an episodic memory (the executors open its Chroma
index), so N rows are 2N LM calls either way. Steps timed, in this order:

1. ``judge.batch`` in this process (``num_threads`` 8), after loading the saved judge and one
   warm-up call;
2. the SparkSession (JVM start) and the DataFrame;
3. a no-op pandas UDF over the rows, twice: the first starts the Python workers, the second
   is what Arrow transfer and task scheduling cost on warm workers;
4. ``judgealign.spark.score`` (writes the pyfunc model; ``spark_udf`` copies it);
5. the first ``collect`` of the scored rows (workers import MLflow, DSPy, litellm, Chroma and
   load the judge), then a second one (warm: the judge stays loaded in each worker process);
6. in a fresh Python: importing the serving stack, and ``mlflow.pyfunc.load_model`` of the
   judge -- what each executor process pays once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import command_line, emit, machine_info, machine_markdown, table  # noqa: E402

SECTION = "spark_overhead"
KEY_VAR = "JUDGEALIGN_BENCH_FAKE_KEY"
ANSWERS = ("Paris is the capital of France.", "Lyon, I think.", "Marseille is the capital.",
           "The capital is Paris, on the Seine.", "Nice.")
TRAIN = [{"item_id": f"t{i}", "inputs": {"answer": a}, "dimension": dim,
          "score": 3 if "Paris" in a else 1, "rationale": "reference"}
         for i, a in enumerate(ANSWERS) for dim in ("correctness", "clarity")]
COLD_LOAD = """
import sys, time
t0 = time.perf_counter()
import dspy, chromadb, litellm, mlflow.pyfunc, judgealign.serving
t1 = time.perf_counter()
mlflow.pyfunc.load_model(sys.argv[1])
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def _respond(latency: float):
    def respond(prompt: str) -> dict[str, str]:
        if latency:
            time.sleep(latency)
        from judgealign.adapter import judged_text

        text = judged_text(prompt, "answer")
        return {"score": "3" if "Paris" in text else "1", "rationale": "fake LM"}

    return respond


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(rows: int, latency_ms: float, threads: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds per step (see the module docstring) and facts about the run."""
    import judgealign
    from judgealign import build
    from judgealign.config import load_config
    from judgealign.program import RubricJudge
    from judgealign.signatures.rubric import rubric_from_dict
    from judgealign.testing import TINY_RUBRIC, FakeOpenAIServer, scripted_lm

    times: dict[str, float] = {}
    facts: dict[str, Any] = {"rows": rows, "lm_calls_per_run": 2 * rows,
                             "latency_ms": latency_ms, "threads": threads}
    respond = _respond(latency_ms / 1000.0)
    work = Path(tempfile.mkdtemp(prefix="judgealign-bench-spark-"))
    with FakeOpenAIServer(respond) as server:
        os.environ.update({
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", KEY_VAR: "sk-bench",
            "JUDGEALIGN_LM__MODEL": "openai/fake", "JUDGEALIGN_LM__API_BASE": server.api_base,
            "JUDGEALIGN_LM__API_KEY_ENV": KEY_VAR, "JUDGEALIGN_LM__CACHE": "false",
            "JUDGEALIGN_LM__NUM_RETRIES": "0"})
        rubric = rubric_from_dict(TINY_RUBRIC)
        settings = load_config(overrides={"memory": {"semantic": False}})
        aligned = judgealign.align(RubricJudge(rubric, lm=scripted_lm(respond)), TRAIN,
                                   config=settings)
        judge_dir = aligned.save(work / "judge")
        items = [{"answer": f"{ANSWERS[i % len(ANSWERS)]} (row {i})"} for i in range(rows)]
        ids = [f"r{i}" for i in range(rows)]

        judge, times["batch: load the saved judge"] = _timed(lambda: build.load_judge(judge_dir))
        # The first LM call imports litellm's provider code: paid once per process, timed
        # apart so the batch is the steady state (as the Spark workers' second collect).
        _, times["batch: first LM call (imports)"] = _timed(lambda: judge.batch(items[:1]))
        before = len(server.requests)
        _, times["batch: judge.batch"] = _timed(
            lambda: judge.batch(items, item_ids=ids, num_threads=threads))
        facts["batch_calls"] = len(server.requests) - before

        from pyspark.sql import SparkSession
        from pyspark.sql.functions import pandas_udf

        spark, times["spark: JVM + SparkSession"] = _timed(
            lambda: SparkSession.builder.master("local[2]").appName("judgealign-bench")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.warehouse.dir", str(work / "warehouse")).getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        df, times["spark: DataFrame"] = _timed(lambda: spark.createDataFrame(
            [(i, item["answer"]) for i, item in zip(ids, items, strict=True)],
            "item_id string, answer string").cache())
        facts["partitions"] = df.rdd.getNumPartitions()
        df.count()

        @pandas_udf("long")
        def length(text: pd.Series) -> pd.Series:
            return text.str.len()

        noop = df.select(length("answer"))
        _, times["spark: no-op pandas UDF, cold workers"] = _timed(noop.collect)
        _, times["spark: no-op pandas UDF, warm workers"] = _timed(noop.collect)

        from judgealign.spark import score

        scored, times["spark: score() (model written, spark_udf)"] = _timed(
            lambda: score(df, judge_dir, num_threads=threads))
        before = len(server.requests)
        out, times["spark: first collect"] = _timed(scored.collect)
        facts["spark_calls_first"] = len(server.requests) - before
        facts["spark_failed"] = sum(r["correctness"] == "FAILED" for r in out)
        before = len(server.requests)
        _, times["spark: second collect (warm)"] = _timed(scored.collect)
        facts["spark_calls_second"] = len(server.requests) - before
        spark.stop()

        from judgealign.tracking import save_judge_model

        model = save_judge_model(judge_dir, work / "model")
        env = {**os.environ}
        proc = subprocess.run([sys.executable, "-c", COLD_LOAD, str(model)], env=env,
                              capture_output=True, text=True, timeout=600, check=True)
        cold_import, cold_load = (float(x) for x in proc.stdout.split()[-2:])
        times["fresh Python: import the serving stack"] = cold_import
        times["fresh Python: mlflow.pyfunc.load_model(judge)"] = cold_load
    return times, facts


def render(times: dict[str, float], facts: dict[str, Any], argv: Sequence[str]) -> str:
    rows = facts["rows"]
    batch = times["batch: judge.batch"]
    spark_total = sum(v for k, v in times.items() if k.startswith("spark:")
                      and "no-op" not in k and "second" not in k)
    lines = [f"### Scoring {rows} rows: Spark local[2] vs `judge.batch` (fake LM)", "",
             f"Command: `{command_line('benchmarks.spark_overhead', argv)}`. Judge: the tiny "
             f"2-dimension test rubric with an episodic memory; {facts['lm_calls_per_run']} LM "
             f"calls per run to an OpenAI-compatible fake on 127.0.0.1 answering in "
             f"{facts['latency_ms']:g} ms; {facts['threads']} threads per task; "
             f"{facts['partitions']} partitions. LM calls counted: batch "
             f"{facts['batch_calls']}, Spark first {facts['spark_calls_first']}, second "
             f"{facts['spark_calls_second']}; failed rows on Spark: {facts['spark_failed']}.", "",
             table(["step", "seconds"], [[k, f"{v:.2f}"] for k, v in times.items()]), "",
             f"**Wall time, {rows} rows:** `judge.batch` {batch:.1f} s (plus "
             f"{times['batch: load the saved judge']:.1f} s to load the judge and "
             f"{times['batch: first LM call (imports)']:.1f} s for the first call); Spark from "
             f"nothing (JVM, DataFrame, model, first collect) {spark_total:.1f} s; Spark warm "
             f"(second collect) {times['spark: second collect (warm)']:.1f} s.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 rows")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="the fake LM's delay per call (default 0: pure overhead)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    info = machine_info(("pyspark", "mlflow", "dspy", "chromadb", "litellm"))
    times, facts = run(20 if args.quick else args.rows, args.latency_ms, args.threads)
    text = render(times, facts, argv) + "\n" + machine_markdown(info, lm="fake (127.0.0.1)")
    emit(SECTION, text, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
