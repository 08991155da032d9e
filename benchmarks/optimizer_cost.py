"""Alignment cost of MemAlign against DSPy's optimizers, per dimension, on one training fold.

Run from the repository root::

    python -m benchmarks.optimizer_cost --quick   # 1 dimension, 6 notebooks, 20 s per run
    python -m benchmarks.optimizer_cost           # 3 dimensions, 12 notebooks, 90 s per run

Every method aligns the same judge of one notebook dimension (``data_imputation``,
``model_training``, ``metrics_evaluation``) on the same training items of fold 0 of
``assign_folds(k=4, seed=0)``, with the same LM (the embedded SmolLM2-135M, its answer cache and
DSPy's cache off), the same ``k`` demos and the same notebook excerpt (the first and last
tokens of each notebook, ``ITEM_TOKENS`` in all). What is counted is ``compile`` only: LM
calls, prompt and completion tokens (the engine's own counts) and wall seconds.

* ``memalign``: judgealign's optimizer, both memories (guideline distillation is the only LM
  work; episodic memory is an embedding + Chroma upsert).
* ``labeled-fewshot``, ``knn-fewshot``, ``bootstrap-fewshot``: judgealign's wrappers of
  ``dspy.LabeledFewShot``, ``dspy.KNNFewShot`` and ``dspy.BootstrapFewShot``
  (``optimizers/baselines.py``).
* ``miprov2-light``, ``simba``, ``gepa``: the DSPy optimizers themselves, on the dimension's
  predictor wrapped as a ``dspy.Module`` returning ``score``; metric "score equals the
  expert's" (GEPA also gets the expert's rationale as feedback); small budgets (below).

A run may use at most ``--budget`` seconds of LM time: after that every LM call raises, the
optimizer winds down, and the row says **cut** with what it had spent — a lower bound on what
finishing would cost, not a finished run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import command_line, emit, machine_markdown, table  # noqa: E402
from benchmarks._split import FOLD_SEED, FOLDS, HELD_OUT_FOLD, fold_split  # noqa: E402

SECTION = "optimizer_cost"
DIMS = ("data_imputation", "model_training", "metrics_evaluation")
K = 3                       # demos per judgment, every method
ITEM_TOKENS = 600           # notebook excerpt every method's judge sees
DEMO_INPUT_TOKENS = 150     # MemAlign's reflection and demo excerpts
REFLECTION_MAX_TOKENS = 400  # answer budget of proposal/reflection calls (as MemAlign's)
QUICK = {"train": 6, "budget": 20.0, "dims": DIMS[:1]}
FULL = {"train": 12, "budget": 90.0, "dims": DIMS}
METHODS = ("memalign", "labeled-fewshot", "knn-fewshot", "bootstrap-fewshot", "miprov2-light",
           "simba", "gepa")
SETTINGS = {
    "memalign": f"k={K}, batches of ≤ 20 examples, demo excerpts {DEMO_INPUT_TOKENS} tokens",
    "labeled-fewshot": f"k={K}",
    "knn-fewshot": f"k={K}, judgealign's hashing embedder",
    "bootstrap-fewshot": f"max_bootstrapped_demos={K}, max_labeled_demos={K}, max_rounds=1",
    "miprov2-light": f"auto='light', max_bootstrapped_demos={K}, max_labeled_demos={K}, "
                     "num_threads=1, prompt model = judge LM with 400-token answers",
    "simba": f"bsize=4, num_candidates=2, max_steps=2, max_demos={K}",
    "gepa": "max_metric_calls = 3 × training examples, reflection_minibatch_size=3, "
            "reflection LM = judge LM with 400-token answers",
}


class BudgetExhausted(RuntimeError):
    """The run's LM time budget is spent."""


class MeteredEngine:
    """Wraps the embedded engine: counts calls and tokens, and refuses calls past a deadline.

    ``dspy.LM.copy`` keeps the engine, so copies an optimizer makes are metered too.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.start(None)

    def start(self, seconds: float | None) -> None:
        self.calls = self.prompt_tokens = self.completion_tokens = self.refused = 0
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def complete(self, request: Any) -> Any:
        if self.deadline is not None and time.monotonic() > self.deadline:
            with self._lock:
                self.refused += 1
            raise BudgetExhausted("benchmark budget spent")
        response = self.inner.complete(request)
        usage = getattr(response, "usage", None)
        with self._lock:
            self.calls += 1
            self.prompt_tokens += int(getattr(usage, "input_tokens", 0) or 0)
            self.completion_tokens += int(getattr(usage, "output_tokens", 0) or 0)
        return response

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class InstantEngine:
    """Answers any DSPy signature at once with placeholder values of the right shape.

    Used to count the LM calls each optimizer makes *to finish* on the same fold (the
    embedded model's runs are cut by the budget): JSON that fits the request's schema when
    there is one, else DSPy's chat format with every output field. The judge's score is
    always the middle level, so metric-driven optimizers see a plausible, imperfect judge.
    """

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "seed"})

    def __init__(self, context_window: int, count_tokens: Callable[[str], int]) -> None:
        self.context_window = context_window
        self.count_tokens = count_tokens
        self.calls = 0
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Any:
        import json

        from dspy.lm15 import Message, Response, TextPart, Usage

        from judgealign.testing import request_text

        prompt = request_text(request)
        fmt = request.config.response_format
        schema = fmt.get("schema") if isinstance(fmt, dict) else None
        if isinstance(fmt, dict) and schema is None and fmt.get("type") == "json_object":
            schema = {"type": "object"}
        text = json.dumps(_placeholder(schema)) if schema else _chat_answer(prompt)
        with self._lock:
            self.calls += 1
        return Response(id=None, model="instant", message=Message.assistant([TextPart(text)]),
                        finish_reason="stop",
                        usage=Usage(input_tokens=self.count_tokens(prompt),
                                    output_tokens=self.count_tokens(text)))

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))


def _placeholder(schema: Any, name: str = "") -> Any:
    if not isinstance(schema, dict):
        return "placeholder"
    if "enum" in schema:
        values = schema["enum"]
        return values[len(values) // 2]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return _placeholder(schema[key][0], name)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: _placeholder(v, k) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    return "placeholder " + name


_OUTPUT_FIELDS = re.compile(r"Your output fields are:\n(.*?)(?:\n\n|\nAll interactions)", re.S)
_FIELD = re.compile(r"^\s*\d+\. `(\w+)` \(([^)]*)\)", re.M)


def _chat_answer(prompt: str) -> str:
    block = _OUTPUT_FIELDS.search(prompt)
    fields = _FIELD.findall(block.group(1)) if block else []
    parts = []
    for name, kind in fields:
        value = ("{}" if kind.startswith("dict") else "[]" if kind.startswith("list")
                 else "True" if kind == "bool" else "1" if kind in ("int", "float")
                 else "2" if name == "score" else f"placeholder {name}")
        parts.append(f"[[ ## {name} ## ]]\n{value}")
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


@dataclass
class Row:
    method: str
    dimension: str
    train: int
    status: str = "finished"
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    note: str = ""
    refused: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --- the programs the DSPy optimizers see ----------------------------------------------------


def score_program(rubric: Any, dim: str) -> Any:
    """One dimension's judge as DSPy optimizers expect a program: it returns ``score``."""
    import dspy

    from judgealign.program import DimensionJudge
    from judgealign.signatures.rubric import format_score

    class ScoreProgram(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            # k=0 and no memory: the judge shows the demos an optimizer puts on its predictor.
            self.judge = DimensionJudge(rubric, dim, k=0, demo_input_tokens=DEMO_INPUT_TOKENS,
                                        item_tokens=ITEM_TOKENS)

        def forward(self, **inputs: str) -> Any:
            result = self.judge(**inputs)
            score = "" if result.failed else format_score(result.score)
            return dspy.Prediction(score=score, rationale=result.rationale)

    return ScoreProgram()


def exact(gold: Any, pred: Any, trace: Any = None) -> float:
    return float(str(getattr(pred, "score", "")) == str(gold.score))


def gepa_metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None,
                pred_trace: Any = None) -> Any:
    import dspy

    return dspy.Prediction(score=exact(gold, pred),
                           feedback=f"The expert scored {gold.score}: {gold.rationale}")


# --- one run ---------------------------------------------------------------------------------


def run_method(method: str, dim: str, ctx: dict[str, Any]) -> Row:
    import dspy

    from judgealign.optimizers.baselines import FewShotBaseline, episode_examples
    from judgealign.optimizers.memalign import MemAlign
    from judgealign.program import RubricJudge

    rubric, labels, lm, long_lm, engine = (ctx[k] for k in ("rubric", "labels", "lm", "long_lm",
                                                            "engine"))
    dim_labels = labels.for_dimensions([dim])
    episodes = dim_labels.episodes(dim)
    row = Row(method, dim, len(episodes))
    examples = episode_examples(episodes, rubric.input_names)

    def judge() -> RubricJudge:
        return RubricJudge(rubric, lm=lm, k=K, demo_input_tokens=DEMO_INPUT_TOKENS,
                           item_tokens=ITEM_TOKENS)

    work: Callable[[], Any]
    if method == "memalign":
        def work() -> Any:
            compiled = MemAlign(reflection_lm=lm, k=K, batch_examples=20,
                                demo_input_tokens=DEMO_INPUT_TOKENS).compile(judge(),
                                                                             trainset=dim_labels)
            rep = next(d for d in compiled.report.dimensions if d.dimension == dim)
            row.extra["kept"] = rep.kept
            row.note = f"{rep.proposed} guidelines proposed, {rep.kept} kept"
    elif method in ("labeled-fewshot", "knn-fewshot", "bootstrap-fewshot"):
        def work() -> Any:
            compiled = FewShotBaseline(method, lm=lm, k=K, demo_input_tokens=DEMO_INPUT_TOKENS
                                       ).compile(judge(), trainset=dim_labels)
            demos = compiled.report.demos.get(dim)
            row.note = "demos chosen per judged item" if method == "knn-fewshot" else \
                f"{len(demos or [])} demos"
    elif method == "miprov2-light":
        def work() -> Any:
            opt = dspy.MIPROv2(metric=exact, prompt_model=long_lm, task_model=lm, auto="light",
                               max_bootstrapped_demos=K, max_labeled_demos=K, num_threads=1,
                               verbose=False, track_stats=False)
            opt.compile(score_program(rubric, dim), trainset=examples)
    elif method == "simba":
        def work() -> Any:
            opt = dspy.SIMBA(metric=exact, bsize=min(4, len(examples)), num_candidates=2,
                             max_steps=2, max_demos=K, num_threads=1)
            opt.compile(score_program(rubric, dim), trainset=examples)
    elif method == "gepa":
        def work() -> Any:
            opt = dspy.GEPA(metric=gepa_metric, max_metric_calls=3 * len(examples),
                            reflection_lm=long_lm, reflection_minibatch_size=3, num_threads=1,
                            track_stats=False)
            opt.compile(score_program(rubric, dim), trainset=examples, valset=examples)
    else:
        raise ValueError(f"unknown method {method!r}")

    chatter = io.StringIO()
    engine.start(ctx["budget"])
    start = time.perf_counter()
    try:
        with dspy.context(lm=lm), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter):
            work()
    except Exception as exc:
        row.status = "failed"
        row.note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        logging.getLogger(__name__).debug("%s on %s failed:\n%s", method, dim,
                                          traceback.format_exc())
    row.seconds = time.perf_counter() - start
    row.calls, row.prompt_tokens = engine.calls, engine.prompt_tokens
    row.completion_tokens, row.refused = engine.completion_tokens, engine.refused
    if engine.refused:
        row.status = "cut"
        row.note = (f"budget of {ctx['budget']:.0f} s of LM time spent; {engine.refused} later "
                    "LM calls refused" + (f" ({row.note})" if row.note else ""))
    engine.start(None)
    return row


def setup(train: int | None, budget: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The embedded model's context, and the same with an instant LM (for calls to finish)."""
    import dspy

    from judgealign.datasets import load_ml_notebooks
    from judgealign.local_lm import DEFAULT_MAX_TOKENS, LlamaCppEngine

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    data = load_ml_notebooks()
    labels = data.labels.for_dimensions(DIMS)
    ids, _ = fold_split(labels, train=train)
    real = LlamaCppEngine(None, use_cache=False)
    name = "local/" + real.model_path.stem
    contexts = []
    for inner in (real, InstantEngine(real.context_window, real.count_tokens)):
        engine = MeteredEngine(inner)
        lm = dspy.LM(name, engine=engine, cache=False, temperature=0.0,
                     max_tokens=DEFAULT_MAX_TOKENS, num_retries=0)
        contexts.append({"rubric": data.rubric, "labels": labels.subset(ids), "lm": lm,
                         "long_lm": lm.copy(max_tokens=REFLECTION_MAX_TOKENS), "engine": engine,
                         "budget": budget if inner is real else None, "train_ids": ids})
    return contexts[0], contexts[1]


def _per_call(rows: list[Row]) -> float:
    """Median seconds per embedded-model call over every run that made one."""
    rates = [r.seconds / r.calls for r in rows if r.calls]
    return statistics.median(rates) if rates else float("nan")


def render(rows: list[Row], finish: dict[tuple[str, str], Row], ctx: dict[str, Any],
           argv: Sequence[str], mode: str, wall: float) -> str:
    per_call = _per_call(rows)

    def to_finish(r: Row) -> tuple[int, float] | None:
        """Calls to finish (instant pass) and the estimated seconds; None if not known."""
        f = finish.get((r.method, r.dimension))
        if f is None or f.status == "failed":
            return None
        return f.calls, f.calls * (r.seconds / r.calls if r.calls else per_call)

    lines = []
    for r in rows:
        est, f = to_finish(r), finish.get((r.method, r.dimension))
        missing = f"instant run failed: {f.note}" if f else "not run"
        lines.append([r.method, r.dimension, r.train,
                      f"**{r.status}**" if r.status != "finished" else r.status, r.calls,
                      f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}", f"{r.seconds:.1f}",
                      f"{est[0]:,}" if est else "–", f"{est[1] / 60:.1f}" if est else missing,
                      r.note.replace("|", "\\|")])
    summary = []
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        ests = [est for r in mine if (est := to_finish(r)) is not None]
        summary.append([method, ", ".join(sorted({r.status for r in mine})),
                        f"{statistics.mean(r.calls for r in mine):.1f}",
                        f"{statistics.mean(r.prompt_tokens + r.completion_tokens for r in mine):,.0f}",  # noqa: E501
                        f"{statistics.mean(r.seconds for r in mine):.1f}",
                        f"{statistics.mean(c for c, _ in ests):,.0f}" if ests else "–",
                        f"{statistics.mean(t for _, t in ests) / 60:.1f}" if ests else "–",
                        SETTINGS[method]])
    return "\n\n".join([
        f"## Alignment cost per dimension: MemAlign vs DSPy optimizers ({mode})",
        f"Command: `{command_line('benchmarks.optimizer_cost', argv)}` — run took {wall:.0f} s. "
        f"Fold {HELD_OUT_FOLD} of `assign_folds(k={FOLDS}, seed={FOLD_SEED})` held out; "
        f"{len(ctx['train_ids'])} training notebooks of the other folds, the same for every "
        f"method. Same LM (embedded SmolLM2-135M, greedy, answer cache off), k={K} demos "
        f"(each cut to {DEMO_INPUT_TOKENS} tokens), notebooks cut to {ITEM_TOKENS} tokens. "
        f"Budget per run: {ctx['budget']:.0f} s of LM time; a **cut** row is a lower bound. "
        "Only `compile` is measured. *Calls to finish* come from a second pass of every "
        "method with an instant LM that answers any signature with placeholder values "
        "(the judge always answers the middle level): the calls the optimizer makes until it "
        "returns. *Minutes to finish* multiplies them by the run's own seconds per embedded-"
        f"model call (median over all runs, {per_call:.1f} s, when the run made none): an "
        "estimate, not a measurement.",
        "Mean per dimension (this fold):",
        table(["method", "outcome", "LM calls", "tokens (prompt + completion)", "seconds",
               "calls to finish", "est. minutes to finish", "settings"], summary),
        "Every run:",
        table(["method", "dimension", "training examples", "outcome", "LM calls",
               "prompt tokens", "completion tokens", "seconds", "calls to finish",
               "est. minutes to finish", "note"], lines),
        machine_markdown(lm=ctx["lm"].model + " (llama-cpp-python, in-process)"),
    ])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 dimension, 6 training notebooks, 20 s of LM time per run")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--dims", nargs="+", choices=DIMS, help="default: the mode's")
    parser.add_argument("--train", type=int, help="training notebooks (default: the mode's)")
    parser.add_argument("--budget", type=float, help="seconds of LM time per run")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.simplefilter("ignore")
    logging.getLogger("dspy").setLevel(logging.CRITICAL)
    mode = QUICK if args.quick else FULL
    ctx, instant = setup(args.train or mode["train"], args.budget or mode["budget"])
    dims = args.dims or mode["dims"]
    start, rows, finish = time.perf_counter(), [], {}
    for dim in dims:
        for method in args.methods:
            finish[(method, dim)] = row = run_method(method, dim, instant)
            print(f"instant {method:18s} {dim:20s} {row.status:8s} calls={row.calls:5d} "
                  f"{row.note}", file=sys.stderr, flush=True)
    for dim in dims:
        for method in args.methods:
            row = run_method(method, dim, ctx)
            print(f"{method:18s} {dim:20s} {row.status:8s} calls={row.calls:4d} "
                  f"s={row.seconds:7.1f} {row.note}", file=sys.stderr, flush=True)
            rows.append(row)
    custom = args.dims or args.train or args.budget or args.methods != list(METHODS)
    label = "quick mode" if args.quick else "custom settings" if custom else "full mode"
    emit(SECTION, render(rows, finish, ctx, argv, label, time.perf_counter() - start),
         write=not args.no_write)


if __name__ == "__main__":
    main()
