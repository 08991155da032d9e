"""MemAlign: align a rubric judge with expert feedback through two memories.

* **Semantic memory** — a reflection LM reads batches of labelled examples of one dimension
  (item excerpt, expert score, expert rationale) and writes short, general guidelines that
  say where the experts' judgement differs from a naive reading of the rubric. Each guideline
  cites the examples it came from; the grounding filter rejects the ones its evidence does not
  support, near-duplicates merge, and the best-supported ``max_guidelines`` are rendered into
  the dimension's instructions.
* **Episodic memory** — every labelled example goes into a Chroma index; at judging time the
  ``k`` nearest examples of the same dimension become that call's demos.

``MemAlign(...).compile(judge, trainset=labels)`` returns an aligned copy; the student is left
untouched. Compiling an aligned judge again distils only examples it has not seen before.
"""

from __future__ import annotations

import copy
import logging
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy
from dspy.teleprompt.teleprompt import Teleprompter
from pydantic import BaseModel, Field

from judgealign.errors import LabelError
from judgealign.items import truncate
from judgealign.labels import LabelSet, warn_if_no_rationales
from judgealign.lm import lm_context_window, lm_token_counter
from judgealign.memory.embedders import Embedder, HashingEmbedder
from judgealign.memory.episodic import Episode, EpisodicMemory
from judgealign.memory.grounding import GroundingFilter
from judgealign.memory.semantic import Guideline, cap, merge_duplicates, render_guidelines
from judgealign.program import RubricJudge
from judgealign.signatures.rubric import format_score, instructions_for

log = logging.getLogger(__name__)

_REFLECTION_OVERHEAD_TOKENS = 450
_REFLECTION_MAX_TOKENS = 400  # three short guidelines with their sources
MAX_GUIDELINE_CHARS = 300  # longer proposals are rejected as too_long: they bloat every prompt
DEFAULT_GROUNDING = GroundingFilter()
_EXAMPLE_REF = re.compile(r"\s*\((?:see )?\[?E\d+(?:\s*,\s*E\d+)*\]?\)|\[E\d+\]")


class ProposedGuideline(BaseModel):
    # No length constraints: pydantic would reject the whole batch for one over-long field.
    # Lengths are screened per guideline after parsing (too_long, no_sources), and the local
    # engine bounds arrays in its grammar so a small model stops.
    text: str = Field(description=f"One short, general, checkable rule (one sentence, at most "
                                  f"{MAX_GUIDELINE_CHARS} characters).")
    sources: list[str] = Field(description="Ids of the examples it comes from, e.g. ['E2']")


class DistillGuidelines(dspy.Signature):
    """You help align an automatic judge with expert reviewers on one rubric dimension.
    Read the rubric and the examples the experts scored, with their rationales. Write short,
    general, checkable guidelines that capture what the experts look for where a naive reading
    of the rubric would score differently. Say what to look for in an item, never which score
    a particular example got. Do not repeat the rubric or an existing guideline. Cite for each
    guideline the ids of the examples it comes from. Write nothing the examples do not show."""

    dimension_rubric: str = dspy.InputField(desc="the dimension and its score levels")
    existing_guidelines: str = dspy.InputField(desc="guidelines already learned")
    examples: str = dspy.InputField(desc="expert-scored examples, each with an id like E1")
    guidelines: list[ProposedGuideline] = dspy.OutputField(desc="at most 3 new guidelines")


@dataclass
class DimensionReport:
    """What compiling did for one dimension."""

    dimension: str
    examples: int = 0
    new_examples: int = 0
    proposed: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    guidelines_total: int = 0
    episodes_total: int = 0
    unprocessed_examples: int = 0
    validation_calls: int = 0
    unvalidated: int = 0
    lm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    warning: str | None = None


@dataclass
class CompileReport:
    """Cost and outcome of one ``compile``; ``dimensions`` in rubric order."""

    optimizer: str
    settings: dict[str, Any]
    dimensions: list[DimensionReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lm_calls(self) -> int:
        return sum(d.lm_calls for d in self.dimensions)

    @property
    def prompt_tokens(self) -> int:
        return sum(d.prompt_tokens for d in self.dimensions)

    @property
    def completion_tokens(self) -> int:
        return sum(d.completion_tokens for d in self.dimensions)

    def to_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "settings": self.settings,
                "seconds": round(self.seconds, 3), "lm_calls": self.lm_calls,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "dimensions": [asdict(d) for d in self.dimensions]}


class CostMeter:
    """Counts the calls and tokens an LM records in its history between start and stop."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self._seen: set[str] = set()
        self._start = 0.0

    def __enter__(self) -> CostMeter:
        self._seen = {e.get("uuid") for e in getattr(self.lm, "history", [])}
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start
        new = [e for e in getattr(self.lm, "history", []) if e.get("uuid") not in self._seen]
        self.calls = len(new)
        self.prompt_tokens = sum(_usage(e, "prompt_tokens", "input_tokens") for e in new)
        self.completion_tokens = sum(_usage(e, "completion_tokens", "output_tokens") for e in new)


def _usage(entry: Mapping[str, Any], *keys: str) -> int:
    usage = entry.get("usage") or {}
    for key in keys:
        if usage.get(key) is not None:
            return int(usage[key])
    return 0


class MemAlign(Teleprompter):
    """The MemAlign optimizer (a DSPy ``Teleprompter``).

    Parameters
    ----------
    reflection_lm
        LM that distils guidelines; default: DSPy's configured LM.
    embedder
        Embeds items for retrieval and guidelines for de-duplication and grounding. Default:
        the aligned judge's existing memory embedder, else :class:`HashingEmbedder`.
    semantic, episodic
        Switch each memory off independently (ablations). Both on by default.
    k
        Demos retrieved per judgment. Default 3.
    max_guidelines
        Guidelines kept per dimension, the best-supported first. Default 8.
    batch_examples
        Most examples in one reflection call; batches are also packed to the reflection LM's
        context window. Default 8.
    demo_input_tokens
        Token budget of an item's excerpt in reflection prompts and in demos. Default 350.
    dedup_threshold
        Cosine similarity at which two guidelines are the same. Default 0.85.
    grounding
        The grounding filter; ``None`` disables it. Default :class:`GroundingFilter()`.
    validate
        Opt-in check of each new guideline with the judge LM: judge a sample of its source
        examples and other training examples with and without it, and reject it
        (``failed_validation``) when the error against the labels grows. Default False.
    validation_budget
        Most judge calls validation may spend per dimension and compile. Default 40.
    seed
        Seeds the choice of validation examples. Default 0.
    progress
        Show a progress bar over reflection calls.

    Every proposal the reflection LM makes is kept or rejected with a reason, per guideline
    (one bad proposal never costs the batch): ``too_long`` (over ``MAX_GUIDELINE_CHARS``),
    ``no_sources`` (cites no example of the batch), ``restates_rubric``, ``ungrounded``,
    ``duplicate``, ``over_cap`` and ``failed_validation``. Only an answer that does not parse,
    or a prompt over the context window, makes the batch retry in halves.
    """

    def __init__(self, *, reflection_lm: Any = None, embedder: Embedder | None = None,
                 semantic: bool = True, episodic: bool = True, k: int = 3,
                 max_guidelines: int = 8, batch_examples: int = 8, demo_input_tokens: int = 350,
                 dedup_threshold: float = 0.85,
                 grounding: GroundingFilter | None = DEFAULT_GROUNDING,
                 validate: bool = False, validation_budget: int = 40, seed: int = 0,
                 progress: bool = False) -> None:
        super().__init__()
        if k < 0 or max_guidelines < 0 or batch_examples < 1 or demo_input_tokens < 32:
            raise ValueError("k and max_guidelines must be >= 0, batch_examples >= 1, "
                             "demo_input_tokens >= 32")
        if validation_budget < 0:
            raise ValueError(f"validation_budget must be >= 0, got {validation_budget}")
        if not 0.0 < dedup_threshold <= 1.0:
            raise ValueError(f"dedup_threshold must be in (0, 1], got {dedup_threshold}")
        self.reflection_lm = reflection_lm
        self.embedder = embedder
        self.semantic, self.episodic = semantic, episodic
        self.k, self.max_guidelines = k, max_guidelines
        self.batch_examples, self.demo_input_tokens = batch_examples, demo_input_tokens
        self.dedup_threshold, self.grounding = dedup_threshold, grounding
        self.validate, self.validation_budget, self.seed = validate, validation_budget, seed
        self.progress = progress
        self._distill = dspy.Predict(DistillGuidelines)

    def settings(self) -> dict[str, Any]:
        return {"semantic": self.semantic, "episodic": self.episodic, "k": self.k,
                "max_guidelines": self.max_guidelines, "batch_examples": self.batch_examples,
                "demo_input_tokens": self.demo_input_tokens,
                "dedup_threshold": self.dedup_threshold,
                "grounding": asdict(self.grounding) if self.grounding else None,
                "validate": self.validate, "validation_budget": self.validation_budget}

    # --- compile --------------------------------------------------------------------------

    def compile(self, student: RubricJudge, *, trainset: Any, teacher: Any = None,
                valset: Any = None, **kwargs: Any) -> RubricJudge:
        """Return an aligned copy of ``student``; ``trainset`` is a LabelSet (or label rows)."""
        if not isinstance(student, RubricJudge):
            raise TypeError("MemAlign compiles a judgealign RubricJudge, got "
                            f"{type(student).__name__}")
        labels = _as_labelset(trainset).validate(student.rubric)
        warn_if_no_rationales(labels)
        started = time.perf_counter()
        judge = student.deepcopy()
        report = CompileReport("MemAlign", self.settings())
        embedder = (judge.memory.embedder if judge.memory is not None
                    else self.embedder or HashingEmbedder())
        if self.episodic and judge.memory is None:
            judge.attach_memory(EpisodicMemory(embedder))
        elif not self.episodic:
            judge.attach_memory(None)
        lm = self.reflection_lm or dspy.settings.lm
        if self.semantic and lm is None:
            raise RuntimeError("MemAlign needs a reflection LM: pass reflection_lm= or "
                               "call dspy.configure(lm=...)")
        todo = [d for d in judge.dimensions if d in set(labels.dimensions)]
        bar = _bar(len(todo), self.progress)
        for dim in judge.dimensions:
            episodes = labels.episodes(dim)
            rep = DimensionReport(dim, examples=len(episodes))
            if episodes:
                fresh = [e for e in episodes if judge.seen.get(e.id) != e.content_hash]
                rep.new_examples = len(fresh)
                djudge = judge.judges[dim]
                djudge.k = self.k if self.episodic else 0
                djudge.demo_input_tokens = self.demo_input_tokens
                if self.semantic and fresh:
                    before = {g.text for g in djudge.guidelines}
                    with CostMeter(lm) as meter:
                        self._update_semantic(judge, dim, fresh, embedder, lm, rep)
                    rep.lm_calls, rep.seconds = meter.calls, round(meter.seconds, 3)
                    rep.prompt_tokens = meter.prompt_tokens
                    rep.completion_tokens = meter.completion_tokens
                    if self.validate:
                        self._validate(judge, dim, episodes, before, rep)
                if self.episodic:
                    judge.memory.add(fresh)
                for e in fresh:
                    judge.seen[e.id] = e.content_hash
                bar.update(1)
            rep.guidelines_total = len(judge.judges[dim].guidelines)
            rep.episodes_total = judge.memory.counts().get(dim, 0) if judge.memory else 0
            report.dimensions.append(rep)
        bar.close()
        if not self.semantic:
            for djudge in judge.judges.values():
                djudge.set_guidelines([])
        report.seconds = time.perf_counter() - started
        judge.report = report
        return judge

    # --- validation -----------------------------------------------------------------------

    def _validate(self, judge: RubricJudge, dim: str, episodes: list[Episode],
                  before: set[str], rep: DimensionReport) -> None:
        """Reject new guidelines that make the judge agree less with the labels."""
        import random

        djudge = judge.judges[dim]
        lm = djudge.predict.lm or dspy.settings.lm
        new = [g for g in djudge.guidelines if g.text not in before]
        by_item = {e.item_id: e for e in episodes}
        rng = random.Random(f"{self.seed}:{dim}")
        # A private copy to probe with: shares the LM, has no episodic memory.
        memo: dict[int, Any] = {id(djudge.memory): None}
        if djudge.predict.lm is not None:
            memo[id(djudge.predict.lm)] = djudge.predict.lm
        probe = copy.deepcopy(djudge, memo)
        probe.k = 0
        spent, failed = 0, []
        with CostMeter(lm) as meter:
            for g in new:
                own = [by_item[s] for s in g.sources if s in by_item][:3]
                others = [e for e in episodes if e.item_id not in g.sources]
                sample = own + rng.sample(others, min(3, len(others)))
                if spent + 2 * len(sample) > self.validation_budget:
                    rep.unvalidated += 1
                    continue
                spent += 2 * len(sample)
                base = [x for x in djudge.guidelines if x is not g and x not in failed]
                without = self._error(probe, base, sample, lm)
                with_it = self._error(probe, [*base, g], sample, lm)
                if with_it > without:
                    failed.append(g)
        rep.validation_calls = meter.calls
        rep.lm_calls += meter.calls
        rep.prompt_tokens += meter.prompt_tokens
        rep.completion_tokens += meter.completion_tokens
        if failed:
            djudge.set_guidelines([g for g in djudge.guidelines if g not in failed])
            djudge.rejected = djudge.rejected + [g.rejected("failed_validation") for g in failed]
            rep.kept -= len(failed)
            rep.rejected["failed_validation"] = len(failed)

    @staticmethod
    def _error(probe: Any, guidelines: list[Guideline], sample: list[Episode], lm: Any) -> float:
        """Mean distance to the labels; an N/A mismatch or a failure costs the whole scale."""
        probe.set_guidelines(guidelines)
        worst = float(max(probe.rubric.scale) - min(probe.rubric.scale))
        total = 0.0
        with dspy.context(lm=lm):
            for ep in sample:
                got = probe(**ep.inputs)
                if got.failed or (got.score is None) != (ep.score is None):
                    total += worst
                elif got.score is not None and ep.score is not None:
                    total += abs(got.score - ep.score)
        return total / max(len(sample), 1)

    def _update_semantic(self, judge: RubricJudge, dim: str, fresh: list[Episode],
                         embedder: Embedder, lm: Any, rep: DimensionReport) -> None:
        djudge = judge.judges[dim]
        proposals, unprocessed = self._reflect(judge, dim, fresh, lm)
        rep.proposed, rep.unprocessed_examples = len(proposals), unprocessed
        too_long = [g.rejected("too_long") for g in proposals if len(g.text) > MAX_GUIDELINE_CHARS]
        proposals = [g for g in proposals if len(g.text) <= MAX_GUIDELINE_CHARS]
        by_item = {e.item_id: e for e in fresh}
        if self.grounding is not None:
            grounded, rejected = self.grounding.check(proposals, judge.rubric, dim, by_item,
                                                      embedder)
        else:
            grounded = [g for g in proposals if g.sources]
            rejected = [g.rejected("no_sources") for g in proposals if not g.sources]
        existing = djudge.guidelines
        vec_old = embedder.embed([g.text for g in existing]) if existing else None
        vec_new = embedder.embed([g.text for g in grounded]) if grounded else None
        pool, dupes = (merge_duplicates(existing, grounded,
                                        vec_old if vec_old is not None else _empty(embedder),
                                        vec_new, self.dedup_threshold)
                       if grounded else (list(existing), []))
        kept, dropped = cap(pool, self.max_guidelines)
        djudge.set_guidelines(kept)
        newly_rejected = too_long + rejected + dupes + dropped
        djudge.rejected = djudge.rejected + newly_rejected
        rep.kept = sum(1 for g in kept if g.text in {p.text for p in grounded})
        for g in newly_rejected:
            rep.rejected[g.reason or "?"] = rep.rejected.get(g.reason or "?", 0) + 1
        if rep.kept == 0:
            rep.warning = (f"the reflection LM produced no usable guideline for {dim!r} "
                           f"({rep.proposed} proposed, {unprocessed} of {len(fresh)} "
                           "examples unprocessed)")
            warnings.warn(rep.warning, UserWarning, stacklevel=4)

    # --- reflection -----------------------------------------------------------------------

    def _reflect(self, judge: RubricJudge, dim: str, fresh: list[Episode], lm: Any
                 ) -> tuple[list[Guideline], int]:
        """Distil proposals from ``fresh`` in context-sized batches; returns the proposals and
        how many examples produced nothing because every retry failed."""
        spec = judge.rubric.dimension(dim)
        rubric_text = instructions_for(judge.rubric, spec)
        existing = render_guidelines(judge.judges[dim].guidelines) or "(none yet)"
        count = lm_token_counter(lm)
        room = (lm_context_window(lm) - _REFLECTION_MAX_TOKENS - _REFLECTION_OVERHEAD_TOKENS
                - count(rubric_text) - count(existing))
        rendered = [self._render_example(e, judge, count) for e in fresh]
        proposals: list[Guideline] = []
        unprocessed = 0
        for batch in _pack(list(range(len(fresh))), [count(r) for r in rendered],
                           max(room, 64), self.batch_examples):
            got, failed = self._reflect_batch(batch, fresh, rendered, rubric_text, existing,
                                              dim, lm)
            proposals += got
            unprocessed += failed
        return proposals, unprocessed

    def _reflect_batch(self, batch: list[int], fresh: list[Episode], rendered: list[str],
                       rubric_text: str, existing: str, dim: str, lm: Any
                       ) -> tuple[list[Guideline], int]:
        aliases = {f"E{n}": fresh[i].item_id for n, i in enumerate(batch, start=1)}
        text = "\n\n".join(f"[E{n}] {rendered[i]}" for n, i in enumerate(batch, start=1))
        try:
            with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                pred = self._distill(dimension_rubric=rubric_text, existing_guidelines=existing,
                                     examples=text,
                                     config={"max_tokens": _REFLECTION_MAX_TOKENS})
            items = list(pred.guidelines or [])
        except Exception as exc:  # context exceeded or unparseable: retry in smaller batches
            log.info("reflection on %d example(s) of %s failed (%s)", len(batch), dim,
                     type(exc).__name__)
            if len(batch) == 1:
                return [], 1
            half = len(batch) // 2
            left = self._reflect_batch(batch[:half], fresh, rendered, rubric_text, existing,
                                       dim, lm)
            right = self._reflect_batch(batch[half:], fresh, rendered, rubric_text, existing,
                                        dim, lm)
            return left[0] + right[0], left[1] + right[1]
        out = []
        for item in items:
            body = _EXAMPLE_REF.sub("", getattr(item, "text", "") or "").strip()
            if not body:
                continue
            sources = tuple(dict.fromkeys(aliases[s.strip().strip("[]")]
                                          for s in getattr(item, "sources", []) or []
                                          if s.strip().strip("[]") in aliases))
            out.append(Guideline(body, dim, sources, support=max(len(sources), 1)))
        return out, 0

    def _render_example(self, e: Episode, judge: RubricJudge, count: Any) -> str:
        budget = self.demo_input_tokens
        excerpt = "\n".join(f"{name}: {truncate(e.inputs[name], budget, count)}"
                            for name in judge.rubric.input_names if e.inputs.get(name))
        return (f"expert score: {format_score(e.score)}\n"
                f"expert rationale: {e.rationale or '(none given)'}\n"
                f"item excerpt:\n{excerpt}")


def _pack(indices: list[int], sizes: list[int], budget: int, most: int) -> list[list[int]]:
    """Greedy batches of consecutive examples, each within ``budget`` tokens and ``most``
    examples (an example larger than the budget goes alone; the LM call may then retry)."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in indices:
        if current and (used + sizes[i] > budget or len(current) >= most):
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += sizes[i]
    if current:
        batches.append(current)
    return batches


def _empty(embedder: Embedder) -> Any:
    return embedder.embed([])


def _as_labelset(trainset: Any) -> LabelSet:
    if isinstance(trainset, LabelSet):
        labels = trainset
    elif isinstance(trainset, Iterable):
        rows = [dict(r.toDict()) if isinstance(r, dspy.Example) else dict(r) for r in trainset]
        if not rows:
            raise LabelError("the label set is empty: MemAlign needs at least one label")
        labels = LabelSet.from_records(rows, source="trainset")
    else:
        raise TypeError(f"trainset must be a LabelSet or label rows, got {type(trainset)}")
    if not len(labels):
        raise LabelError("the label set is empty: MemAlign needs at least one label")
    return labels


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="aligning", unit="dim", disable=not enabled, leave=False)


def align_report_table(report: CompileReport) -> str:
    """The compile report as a small text table (used by the CLI)."""
    head = f"{'dimension':<28}{'examples':>9}{'new':>5}{'kept':>6}{'rejected':>9}{'calls':>7}"
    lines = [head, "-" * len(head)]
    for d in report.dimensions:
        lines.append(f"{d.dimension:<28}{d.examples:>9}{d.new_examples:>5}{d.kept:>6}"
                     f"{sum(d.rejected.values()):>9}{d.lm_calls:>7}")
    return "\n".join(lines)


__all__ = ["CompileReport", "DimensionReport", "MemAlign", "Sequence"]
