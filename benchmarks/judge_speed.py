"""How fast one notebook can be judged: the engine's limit, and judgealign's nine-dimension
judgment per prompt layout and judging mode (issue 15).

Run from the repository root::

    python -m benchmarks.judge_speed                 # embedded model, one bundled notebook
    python -m benchmarks.judge_speed --judges aligned
    python -m benchmarks.judge_speed --dry-run       # an instant scripted LM; never writes

(a) Raw engine speed, no judgealign: llama.cpp evaluating the first 2,048 tokens of the
notebook's text from an empty KV cache (prompt tokens/s), then generating up to 64 tokens
greedily (generated tokens/s).

(b) judgealign judging the bundled notebook of median length (``ml_notebooks``) on all nine
dimensions, whole (no item cut), with each setting:

* ``per-dimension, classic, ...`` -- judgealign before issue 15: nine calls, DSPy's
  JSONAdapter layout (the dimension's instructions and demos first, the notebook last), the
  whole JSON answer generated under llama.cpp's grammar, a 48-token answer budget;
* ``per-dimension, item-first`` -- nine calls, the notebook first and shared by them, the
  answer written field by field (``judgealign.local_fields``), the 32-token budget;
* ``joint, whole answer under the grammar`` -- one call for all nine dimensions, its JSON
  answer generated token by token under the grammar;
* ``joint`` -- the same call, the answer written field by field (the default);

for two judges: ``unaligned`` (no memory) and ``aligned`` (episodic memory of the other 49
notebooks' labels, k=3 demos of <= 350 tokens: the defaults). Before each judgment the
engine's KV cache is emptied and its answer cache is off, so every setting starts cold.
Reported: wall time and its ratio to the classic layout, LM calls and failures, tokens in the
prompts (what a provider without prompt caching bills), tokens llama.cpp actually evaluated
(prompt tokens not reused from the KV cache, plus generated ones), and the floor: the shared
part once plus each dimension's part (``notebook + nine dimension parts``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import command_line, emit, machine_markdown, table  # noqa: E402

SECTION = "judge_speed"
# (label, layout, mode, answers written field by field by the embedded engine, answer budget
# per call or None for the current default). The first row is judgealign before issue 15.
SETTINGS = (("per-dimension, classic, whole answer under the grammar, 48-token budget "
             "(before issue 15)", "classic", "per-dimension", False, 48),
            ("per-dimension, item-first", "item-first", "per-dimension", True, None),
            ("joint, whole answer under the grammar", "item-first", "joint", False, None),
            ("joint", "item-first", "joint", True, None))
JUDGES = ("unaligned", "aligned")


class EvalCounter:
    """Counts the tokens llama.cpp evaluates and keeps each call's prompt tokens, by wrapping
    the model object's ``eval`` and ``create_chat_completion`` (instance attributes: the
    class is untouched) and, for answers written field by field, the engine's
    ``chat_tokens`` (which builds those calls' prompts)."""

    def __init__(self, llama: Any) -> None:
        from judgealign import local_lm

        self.llama = llama
        self.evaluated = 0
        self.prompts: list[list[int]] = []
        eval_, chat, build = llama.eval, llama.create_chat_completion, local_lm.chat_tokens

        def counted_eval(tokens: Sequence[int]) -> Any:
            self.evaluated += len(tokens)
            return eval_(tokens)

        def recorded_chat(*args: Any, **kwargs: Any) -> Any:
            out = chat(*args, **kwargs)
            n = int((out.get("usage") or {}).get("prompt_tokens") or 0)
            self.prompts.append([int(t) for t in llama.input_ids[:n]])
            return out

        def recorded_build(model: Any, messages: Any) -> Any:
            tokens = build(model, messages)
            if tokens is not None and model is llama:
                self.prompts.append(list(tokens))
            return tokens

        llama.eval, llama.create_chat_completion = counted_eval, recorded_chat
        local_lm.chat_tokens = recorded_build

    def reset(self, *, cache: bool = True) -> None:
        """Zero the counts; with ``cache``, also empty the KV cache, so that the next prompt
        is read from its start (the LM keeps no prefix states: see ``main``)."""
        if cache:
            self.llama.reset()
        self.evaluated, self.prompts = 0, []

    def floor(self) -> int:
        """The shared prefix of the prompts once plus what each adds after it."""
        if not self.prompts:
            return 0
        shared = len(os.path.commonprefix(self.prompts))  # works on token lists too
        return shared + sum(len(p) - shared for p in self.prompts)


def raw_speed(llama: Any, text: str) -> dict[str, float]:
    """Prompt evaluation and greedy generation speed of the bare engine: the prompt is
    evaluated from an empty KV cache, then up to 64 tokens are generated after it (the
    engine reuses the evaluated prompt, so that second call times generation)."""
    tokens = llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:2048]
    llama.reset()
    start = time.perf_counter()
    llama.eval(tokens)
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    out = llama.create_completion(prompt=tokens, max_tokens=64, temperature=0.0)
    gen_s = time.perf_counter() - start
    generated = int((out.get("usage") or {}).get("completion_tokens") or 0)
    llama.reset()
    return {"prompt_tokens": len(tokens), "prompt_tps": len(tokens) / prompt_s,
            "generated": generated, "gen_tps": generated / gen_s if gen_s else 0.0}


def pick_items(data: Any, count: Any) -> tuple[str, str]:
    """The notebook of median length (in the judge LM's tokens), and the next longer one
    (judged just before it in the "in a run" measurement)."""
    items = data.labels.items()
    sizes = sorted((count(items[i]["notebook"]), i) for i in items)
    return sizes[len(sizes) // 2][1], sizes[len(sizes) // 2 + 1][1]


def judges(data: Any, item: str, lm: Any, wanted: Sequence[str]) -> dict[str, Any]:
    from judgealign.optimizers.memalign import MemAlign
    from judgealign.program import RubricJudge

    out: dict[str, Any] = {}
    if "unaligned" in wanted:
        out["unaligned"] = RubricJudge(data.rubric, lm=lm, policy="expected")
    if "aligned" in wanted:
        others = data.labels.subset([i for i in data.labels.item_ids if i != item])
        # Episodic memory only, no calibration: aligning makes no LM call here.
        out["aligned"] = MemAlign(semantic=False, policy="expected").compile(
            RubricJudge(data.rubric, lm=lm), trainset=others)
    return out


def measure(judge: Any, inputs: dict[str, str], setting: tuple[Any, ...],
            counter: EvalCounter | None, before: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """One timed judgment of ``inputs``. Cold (``before`` is None): from an empty KV cache.
    In a run: right after judging ``before`` with the same judge and setting (untimed), as
    in ``batch``, ``cv`` or the demo, so whatever the engine keeps from one item to the next
    (a prompt prefix that does not depend on the item) is reused."""

    _, layout, mode, fill, budget = setting
    judge = judge.deepcopy()
    judge.mode = mode
    for dj in judge.judges.values():
        dj.layout = layout
    lm = judge.get_lm()
    engine = getattr(lm, "engine", None)
    if hasattr(engine, "fill_fields"):
        engine.fill_fields = fill
    kwargs = getattr(lm, "kwargs", None)
    default = (kwargs or {}).get("max_tokens")
    if budget is not None and kwargs is not None and engine is not None and hasattr(
            engine, "fill_fields"):  # the embedded engine's budget only
        kwargs["max_tokens"] = budget
    try:
        return _timed(judge, inputs, counter, before)
    finally:
        if kwargs is not None:
            kwargs["max_tokens"] = default
        if hasattr(engine, "fill_fields"):
            engine.fill_fields = True


def _timed(judge: Any, inputs: dict[str, str], counter: EvalCounter | None,
           before: dict[str, str] | None) -> dict[str, Any]:
    from judgealign.usage import CostMeter

    if counter is not None:
        counter.reset()
    if before is not None:
        judge(**before)
        if counter is not None:
            counter.reset(cache=False)
    start = time.perf_counter()
    with CostMeter() as meter:
        result = judge(**inputs)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "calls": meter.calls, "prompt_tokens": meter.prompt_tokens,
            "completion_tokens": meter.completion_tokens,
            "failed": sum(r.failed for r in result),
            "evaluated": counter.evaluated if counter is not None else None,
            "floor": counter.floor() if counter is not None else None,
            "scores": {r.dimension: r.label for r in result}}


def scripted_answer(prompt: str) -> dict[str, str]:
    """``--dry-run``'s instant judge: level 2 on every dimension asked, either mode."""
    import re

    joint = list(dict.fromkeys(re.findall(r"`(\w+)_score`", prompt)))
    if not joint:
        return {"score": "2", "rationale": "scripted"}
    out = {}
    for dim in joint:
        out[f"{dim}_score"], out[f"{dim}_rationale"] = "2", "scripted"
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judges", default=",".join(JUDGES),
                        help="comma-separated: unaligned, aligned")
    parser.add_argument("--repeats", type=int, default=1,
                        help="judgments per setting (median wall time); default 1")
    parser.add_argument("--dry-run", action="store_true",
                        help="an instant scripted LM; never writes BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = [j.strip() for j in args.judges.split(",") if j.strip()]
    if set(wanted) - set(JUDGES):
        parser.error(f"unknown judge(s) {sorted(set(wanted) - set(JUDGES))}")
    warnings.simplefilter("ignore")

    import dspy

    from judgealign import build
    from judgealign.datasets import load_ml_notebooks
    from judgealign.lm import lm_identity, lm_token_counter

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    if args.dry_run:
        from judgealign.testing import scripted_lm

        lm = scripted_lm(scripted_answer, name="scripted/dry-run")
    else:
        # No kept prefix states: one judgment of one item gains nothing from them, and the
        # token lists the engine builds for them would be counted as prompts in the floor.
        lm = build.judge_lm(build.settings_from(
            None, overrides={"lm": {"cache": False, "prefix_states_mb": 0}}))
    llama = getattr(getattr(lm, "engine", None), "llama", None)
    counter = EvalCounter(llama) if llama is not None else None
    data = load_ml_notebooks()
    count = lm_token_counter(lm)
    item, previous = pick_items(data, count)
    inputs, before = ({k: v for k, v in data.labels.items()[i].items()
                       if k in data.rubric.input_names} for i in (item, previous))
    raw = raw_speed(llama, inputs["notebook"]) if llama is not None else None

    rows = []
    for name, judge in judges(data, item, lm, wanted).items():
        base = None
        for setting in SETTINGS:
            label = setting[0]
            runs = [measure(judge, inputs, setting, counter) for _ in range(args.repeats)]
            warm = [measure(judge, inputs, setting, counter, before)
                    for _ in range(args.repeats)]
            run, hot = runs[0], warm[0]
            run["seconds"] = statistics.median(r["seconds"] for r in runs)
            hot["seconds"] = statistics.median(r["seconds"] for r in warm)
            base = base or run["seconds"]
            rows.append([name, label, f"{run['seconds']:.1f} s", f"{run['seconds'] / base:.2f}",
                         f"{hot['seconds']:.1f} s", f"{hot['seconds'] / base:.2f}",
                         f"{run['calls']} ({run['failed']} failed)",
                         f"{run['prompt_tokens']:,}",
                         "—" if run["evaluated"] is None else f"{run['evaluated']:,}",
                         "—" if hot["evaluated"] is None else f"{hot['evaluated']:,}",
                         "—" if not run["floor"] else
                         f"{run['floor']:,} ({run['evaluated'] / run['floor']:.2f}x)",
                         f"{run['completion_tokens']:,}"])
            print(f"{name} / {label}: cold {run['seconds']:.1f} s, in a run "
                  f"{hot['seconds']:.1f} s, {run['calls']} calls, scores {run['scores']}",
                  file=sys.stderr)

    parts = ["## Judging speed: layouts and joint mode (issue 15)",
             f"Command: `{command_line('benchmarks.judge_speed', argv)}` — notebook `{item}` "
             f"(median length of the bundled set: {count(inputs['notebook']):,} tokens, judged "
             "whole), all nine dimensions, answer cache off, median of "
             f"{args.repeats} judgment(s) per setting. *Cold*: the KV cache emptied before "
             f"the judgment. *In a run*: the same judge and setting judged `{previous}` just "
             "before (untimed), as `batch`, `cv` and the demo judge one item after another; "
             "whatever the engine keeps from one item to the next is reused."]
    if raw is not None:
        parts.append(
            "Engine limit (llama.cpp alone): prompt evaluation "
            f"{raw['prompt_tps']:.0f} tokens/s ({raw['prompt_tokens']:,} tokens from an empty "
            f"cache), generation {raw['gen_tps']:.0f} tokens/s ({raw['generated']} tokens).")
    parts.append(table(["judge", "setting", "wall time, cold", "× before",
                        "wall time, in a run", "× before (cold)", "LM calls",
                        "prompt tokens sent", "tokens evaluated, cold",
                        "tokens evaluated, in a run",
                        "floor: shared part once + parts (cold evaluated / floor)",
                        "tokens generated"], rows))
    if raw is not None:
        parts.append("Reading: *prompt tokens sent* is what a provider without prompt caching "
                     "bills; *tokens evaluated* is what llama.cpp computed (prompt tokens not "
                     "reused from its KV cache, plus generated tokens fed back); the floor "
                     "counts the prompts' common prefix once. At the engine's prompt speed "
                     "above, each 1,000 tokens evaluated cost "
                     f"{1000 / raw['prompt_tps']:.1f} s.")
    ident = " ".join(f"{k}={v}" for k, v in lm_identity(lm).items() if k != "model_sha256")
    parts.append(machine_markdown(lm=ident))
    emit(SECTION, "\n\n".join(parts), write=not (args.no_write or args.dry_run))


if __name__ == "__main__":
    main()
