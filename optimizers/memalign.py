"""MemAlign: align a rubric judge with expert feedback through two memories.

* **Semantic memory** — short, general guidelines that say where the experts' judgement
  differs from a naive reading of the rubric, each with the examples it came from. They are
  made in one of three modes, chosen automatically by what the reflection LM manages:
  *cited* (the LM reads a batch of examples and cites the ones each guideline comes from),
  *per-example* (one short call per example or contrasting pair, whose sources are implicit:
  for small models that cannot cite) and *extractive* (no LM: the most central sentences of
  clusters of the experts' own rationales). The grounding filter rejects guidelines their
  evidence does not support, near-duplicates merge, validation on held-out training examples
  rejects those that make the judge agree less, and the best-supported ``max_guidelines`` are
  rendered into the dimension's instructions.
* **Episodic memory** — every labelled example goes into a Chroma index; at judging time the
  ``k`` nearest examples of the same dimension become that call's demos.

``MemAlign(...).compile(judge, trainset=labels)`` returns an aligned copy; the student is left
untouched. Compiling an aligned judge again distils only examples it has not seen before.
"""

from __future__ import annotations

import copy
import itertools
import logging
import random
import re
import time
import warnings
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import dspy
from dspy.teleprompt.teleprompt import Teleprompter
from pydantic import BaseModel, Field

from judgealign.calibration import (
    Calibration,
    calibration_sample,
    check_policy,
    level_labels,
    training_rows,
)
from judgealign.errors import LabelError
from judgealign.items import truncate
from judgealign.joint import JointMemo, JointView
from judgealign.labels import LabelSet, warn_if_no_rationales
from judgealign.lm import lm_concurrency, lm_context_window, lm_token_counter
from judgealign.memory.embedders import Embedder, HashingEmbedder
from judgealign.memory.episodic import Episode, EpisodicMemory
from judgealign.memory.extractive import extract_guidelines
from judgealign.memory.grounding import GroundingFilter
from judgealign.memory.records import item_text
from judgealign.memory.semantic import (
    MAX_GUIDELINE_CHARS,
    MODES,
    Guideline,
    cap,
    merge_duplicates,
    render_guidelines,
)
from judgealign.program import RubricJudge
from judgealign.signatures.rubric import format_score, instructions_for
from judgealign.usage import CostMeter

log = logging.getLogger(__name__)

_REFLECTION_OVERHEAD_TOKENS = 450
_REFLECTION_MAX_TOKENS = 400  # three short guidelines with their sources
# Per-example calls stay at a few hundred prompt tokens (the embedded 135M model spends minutes
# on a full cited batch): a short rubric, the expert's score and rationale, a short excerpt.
_PER_EXAMPLE_ITEM_TOKENS = 100  # all of an example's inputs together
_PER_EXAMPLE_RATIONALE_TOKENS = 120
_PER_EXAMPLE_MAX_TOKENS = 96  # one sentence of <= MAX_GUIDELINE_CHARS in a small JSON object
_MIN_GUIDELINE_CHARS = 20  # "guidelines", "E1": what a model that cannot do the task writes
# Fewer words than this and it is no rule: "Bike sharing demand: predi" (a notebook's title,
# cut), "## example #1 #2 #3" -- what SmolLM2-135M wrote in per-example calls and the
# grounding filter let through, since the words are the item's own.
_MIN_GUIDELINE_WORDS = 5
REFLECTION_MODES = ("auto", *MODES)
# judge being compiled -> reflection LMs whose cited trial failed in this compile
_CANNOT_CITE: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
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


class WriteGuideline(dspy.Signature):
    """An expert reviewer scored the example below on one rubric dimension and said why (or
    two examples that got different scores). Write one short rule, one sentence, that tells a
    judge what to look for in any item to score this dimension the way the expert did. Use
    the expert's reasons; do not mention the examples themselves."""

    dimension: str = dspy.InputField(desc="the rubric dimension and its score levels")
    examples: str = dspy.InputField(desc="one expert-scored example, or two with different "
                                         "scores")
    guideline: str = dspy.OutputField(desc=f"one sentence, at most {MAX_GUIDELINE_CHARS} "
                                           "characters")


@dataclass
class DimensionReport:
    """What compiling did for one dimension.

    ``modes`` are the reflection modes that ran, in order (e.g. ``["cited", "per-example",
    "extractive"]`` when the cited trial and the per-example calls kept nothing);
    ``kept_by_mode`` counts this compile's kept guidelines per mode; ``reflection_calls``
    counts reflection LM calls; ``validation_calls`` judge calls spent on validation and
    ``unvalidated`` the kept new guidelines validation did not reach (budget, or no judge
    LM); ``unprocessed_examples`` the examples no reflection call distilled (failed calls,
    or beyond ``max_reflection_calls``). ``calibration_calls`` counts the judge calls spent
    on calibration features (included in ``lm_calls``, tokens and seconds),
    ``calibration`` summarises the fitted calibration (kind, reason, cross-validated errors)
    and ``kept_guidelines`` lists this compile's kept guidelines (text, mode, sources).
    """

    dimension: str
    examples: int = 0
    new_examples: int = 0
    proposed: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    guidelines_total: int = 0
    episodes_total: int = 0
    unprocessed_examples: int = 0
    modes: list[str] = field(default_factory=list)
    kept_by_mode: dict[str, int] = field(default_factory=dict)
    reflection_calls: int = 0
    validation_calls: int = 0
    unvalidated: int = 0
    lm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    warning: str | None = None
    calibration_calls: int = 0
    calibration: dict[str, Any] | None = None
    # This compile's kept guidelines as {text, mode, sources}: what a CV report can quote.
    kept_guidelines: list[dict[str, Any]] = field(default_factory=list)


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
    reflection
        How guidelines are made: ``"cited"``, ``"per-example"``, ``"extractive"`` or
        ``"auto"`` (default). ``auto`` tries cited reflection on the first batch of a
        dimension; if none of its guidelines is kept, that dimension is distilled per
        example; if the trial cited no example at all (or did not parse), the other
        dimensions of this compile skip the trial. A dimension left without any guideline
        gets extractive ones. ``extractive``
        needs no reflection LM. The modes that ran are in ``DimensionReport.modes``.
    max_reflection_calls
        Most per-example reflection calls per dimension and compile (one per contrasting
        pair or lone example; the rest count as unprocessed). Default 12. Cited batches are
        bounded by ``batch_examples`` instead.
    validate
        Check each new guideline with the judge LM on training examples it does not come
        from (see :meth:`_validate`) and reject it (``failed_validation``) when the error
        against the labels grows. Default True.
    validation_budget
        Most judge calls validation may spend per dimension and compile: one per held-out
        example for the baseline, then ``validation_items`` per guideline, best-supported
        first. Default 12 (the baseline and three guidelines); guidelines beyond it are kept
        unvalidated and counted. 0 switches validation off in effect.
    validation_items
        Held-out examples each guideline is judged on. Default 3.
    seed
        Seeds the choice of validation examples. Default 0.
    progress
        Show a progress bar over reflection calls.
    policy
        The score policy the aligned judge uses (``"sampled"``, ``"expected"``,
        ``"calibrated"``); ``None`` (default) keeps the student's. With ``"calibrated"``,
        every dimension with labels gets a :class:`~judgealign.calibration.Calibration`
        fitted on them: each training item is judged once more, with its own episode (and
        those of items with identical inputs) left out of retrieval, by the LM the judge
        judges with (``calibration_calls`` in the report). Re-compiling with nothing new for a
        dimension keeps its calibration. ``align`` and ``cv`` pass ``[scoring] policy``.
    calibration_items
        Most training items the calibration judges per dimension: a sample fixed by
        ``seed`` and the item ids, so every dimension of a joint judge gets the same items
        and each is judged once for all of them. ``None`` (default): every training item.
        A cap bounds a calibrated compile's cost (one judgment per item) on a slow LM, at the
        price of fewer rows to fit on.

    Every proposal is kept or rejected with a reason, per guideline (one bad proposal never
    costs the batch): ``empty``, ``too_long`` (over ``MAX_GUIDELINE_CHARS``), ``too_short``,
    ``no_sources`` (cites no example of the batch), ``restates_rubric``, ``ungrounded``,
    ``duplicate``, ``over_cap`` and ``failed_validation``. In cited mode, only an answer that
    does not parse, or a prompt over the context window, makes the batch retry in halves.
    """

    def __init__(self, *, reflection_lm: Any = None, embedder: Embedder | None = None,
                 semantic: bool = True, episodic: bool = True, k: int = 3,
                 max_guidelines: int = 8, batch_examples: int = 8, demo_input_tokens: int = 350,
                 dedup_threshold: float = 0.85,
                 grounding: GroundingFilter | None = DEFAULT_GROUNDING,
                 validate: bool = True, validation_budget: int = 12, seed: int = 0,
                 progress: bool = False, reflection: str = "auto",
                 max_reflection_calls: int = 12, validation_items: int = 3,
                 policy: str | None = None, calibration_items: int | None = None) -> None:
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
        if reflection not in REFLECTION_MODES:
            raise ValueError(f"reflection must be one of {', '.join(REFLECTION_MODES)}, got "
                             f"{reflection!r}")
        if max_reflection_calls < 0 or validation_items < 1:
            raise ValueError("max_reflection_calls must be >= 0 and validation_items >= 1")
        if calibration_items is not None and calibration_items < 1:
            raise ValueError(f"calibration_items must be None or >= 1, got {calibration_items}")
        self.reflection, self.max_reflection_calls = reflection, max_reflection_calls
        self.validation_items, self.calibration_items = validation_items, calibration_items
        self.policy = check_policy(policy) if policy is not None else None
        self._distill = dspy.Predict(DistillGuidelines)

    def settings(self) -> dict[str, Any]:
        return {"semantic": self.semantic, "episodic": self.episodic, "k": self.k,
                "max_guidelines": self.max_guidelines, "batch_examples": self.batch_examples,
                "demo_input_tokens": self.demo_input_tokens,
                "dedup_threshold": self.dedup_threshold,
                "grounding": asdict(self.grounding) if self.grounding else None,
                "validate": self.validate, "validation_budget": self.validation_budget,
                "reflection": self.reflection, "max_reflection_calls": self.max_reflection_calls,
                "validation_items": self.validation_items, "policy": self.policy,
                "calibration_items": self.calibration_items}

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
        if self.semantic and lm is None and self.reflection == "cited":
            # per-example needs one too, but "auto" and "extractive" can fall back offline.
            raise RuntimeError("MemAlign needs a reflection LM for reflection='cited': pass "
                               "reflection_lm= or call dspy.configure(lm=...)")
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
                    # Reflection and validation calls alike are metered here.
                    with CostMeter(lm) as meter:
                        self._update_semantic(judge, dim, fresh, embedder, lm, rep)
                    rep.lm_calls, rep.seconds = meter.calls, round(meter.seconds, 3)
                    rep.prompt_tokens = meter.prompt_tokens
                    rep.completion_tokens = meter.completion_tokens
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
        if self.policy is not None:
            judge.set_policy(self.policy)
        if self.policy == "calibrated":  # after the memories: the features use them
            dims = [rep.dimension for rep in report.dimensions if rep.examples]
            memo = JointMemo()  # joint judgments, shared by the dimensions
            for rep in report.dimensions:
                if rep.examples:
                    self._calibrate(judge, rep.dimension, labels, rep, dims, memo)
        report.seconds = time.perf_counter() - started
        judge.report = report
        return judge

    # --- calibration ----------------------------------------------------------------------

    def _calibrate(self, judge: RubricJudge, dim: str, labels: LabelSet,
                   rep: DimensionReport, dims: Sequence[str], memo: JointMemo) -> None:
        """Fit ``dim``'s calibration on every label the judge holds for it (this compile's and
        its episodic memory's), from features computed leave-own-episode-out (see
        :func:`judgealign.calibration.training_rows`); counts the judge calls in ``rep``.

        A joint judge's features come from joint judgments of ``dims`` (the calibrated
        dimensions), each training item judged once for all of them (``memo``), as it
        will judge after alignment; a joint call is counted by the first dimension that
        needed it."""
        djudge = judge.judges[dim]
        if not rep.new_examples and djudge.calibration is not None:
            rep.calibration = djudge.calibration.summary()  # nothing new: still valid
            return
        episodes = {e.item_id: e for e in (judge.memory.episodes(dim) if judge.memory else [])}
        episodes.update({e.item_id: e for e in labels.episodes(dim)})
        chosen = calibration_sample(episodes, self.calibration_items, self.seed)
        lm = djudge.resolve_lm()  # the LM the judge will be scored with

        # Judging every training item is most of a calibrated compile's time: show it.
        bar = _bar(len(chosen), self.progress, f"calibrating {dim}", "item")

        def run(fn: Any, jobs: Sequence[Any]) -> list[Any]:
            def call(job: Any) -> Any:
                with dspy.context(lm=lm):
                    out = fn(job)
                bar.update(1)
                return out

            return _map_calls(call, jobs, lm)

        with CostMeter(lm) as meter:
            target = JointView(judge, dim, dims, memo) if judge.mode == "joint" else djudge
            try:
                rows, failed = training_rows(target, [episodes[i] for i in chosen], run)
            finally:
                bar.close()
        djudge.calibration = Calibration.fit(
            rows, level_labels(judge.rubric.scale, djudge.spec.allows_na), judge.rubric.scale,
            k=djudge.k, judge_calls=meter.calls, failed=failed)
        rep.calibration = djudge.calibration.summary()
        rep.calibration_calls = meter.calls
        rep.lm_calls += meter.calls
        rep.prompt_tokens += meter.prompt_tokens
        rep.completion_tokens += meter.completion_tokens
        rep.seconds = round(rep.seconds + meter.seconds, 3)

    # --- semantic memory: reflection modes, screening, validation -------------------------

    def _update_semantic(self, judge: RubricJudge, dim: str, fresh: list[Episode],
                         embedder: Embedder, lm: Any, rep: DimensionReport) -> None:
        """Distil ``fresh`` (this compile's new examples of ``dim``) into guidelines.

        The modes run as ``self.reflection`` says (see the class docstring); each mode's
        proposals go through :meth:`_admit` (length screen, grounding, de-duplication,
        held-out validation) and the cap is applied once at the end, best-supported first.
        ``lm`` may be ``None`` when only extractive guidelines are wanted (or possible).
        Fills ``rep``: proposed, kept, rejected, modes, kept_by_mode, reflection_calls,
        validation_calls, unvalidated, unprocessed_examples and warning.
        """
        djudge = judge.judges[dim]
        rnd = _Round(before={g.text for g in djudge.guidelines})
        mode = self.reflection
        if mode == "cited" or (mode == "auto" and lm is not None
                               and self._may_cite(judge, lm)):
            if mode == "cited":
                self._admit(judge, dim, self._propose_cited(judge, dim, fresh, lm, rep, "all"),
                            fresh, embedder, rep, rnd, "cited")
            else:  # auto: one batch shows whether this LM's citations survive grounding
                failed_before = rep.unprocessed_examples
                trial = self._propose_cited(judge, dim, fresh, lm, rep, "first")
                kept = self._admit(judge, dim, trial, fresh, embedder, rep, rnd, "cited")
                # Cannot cite: it proposed, citing no example, or its answer did not parse.
                # (No proposal at all is a capable LM with nothing to add.)
                if ((trial and not any(g.sources for g in trial))
                        or (not trial and rep.unprocessed_examples > failed_before)):
                    self._remember_cannot_cite(judge, lm)
                if kept:
                    rest = self._propose_cited(judge, dim, fresh, lm, rep, "rest")
                    self._admit(judge, dim, rest, fresh, embedder, rep, rnd, "cited")
                else:
                    # The trial's examples gave nothing usable: they are distilled again.
                    rep.unprocessed_examples = 0
                    mode = "per-example"
        elif mode == "auto" and lm is not None:
            mode = "per-example"
        if mode == "per-example" and lm is not None:
            self._admit(judge, dim, self._propose_per_example(judge, dim, fresh, embedder, lm,
                                                              rep),
                        fresh, embedder, rep, rnd, "per-example")
        if mode == "extractive" or (self.reflection == "auto" and not djudge.guidelines):
            found = extract_guidelines(fresh, embedder, limit=self.max_guidelines)
            self._admit(judge, dim, found, fresh, embedder, rep, rnd, "extractive")
        kept, dropped = cap(djudge.guidelines, self.max_guidelines)
        djudge.set_guidelines(kept)
        self._reject(djudge, dropped, rep)
        self._tally(djudge, rnd.before, rep)
        if not djudge.guidelines:
            tried = " then ".join(rep.modes) or "no mode"
            rep.warning = (f"no guideline for {dim!r}: {tried} kept nothing ({rep.proposed} "
                           f"proposed, {rep.unprocessed_examples} of {len(fresh)} examples "
                           "unprocessed)")
            warnings.warn(rep.warning, UserWarning, stacklevel=4)

    def _admit(self, judge: RubricJudge, dim: str, proposals: list[Guideline],
               fresh: list[Episode], embedder: Embedder, rep: DimensionReport, rnd: _Round,
               mode: str) -> int:
        """Screen one mode's proposals and add the survivors to the dimension (uncapped);
        returns how many of them are kept after validation."""
        djudge = judge.judges[dim]
        if mode not in rep.modes:
            rep.modes.append(mode)
        rep.proposed += len(proposals)
        screened: list[Guideline] = []
        rejected: list[Guideline] = []
        for g in proposals:
            if not g.text.strip():
                rejected.append(g.rejected("empty"))
            elif len(g.text) > MAX_GUIDELINE_CHARS:
                rejected.append(g.rejected("too_long"))
            elif g.sources and (len(g.text) < _MIN_GUIDELINE_CHARS
                                or _words(g.text) < _MIN_GUIDELINE_WORDS):
                # (without sources it is rejected as no_sources below, the more telling reason)
                rejected.append(g.rejected("too_short"))
            else:
                screened.append(g)
        by_item = {e.item_id: e for e in fresh}
        if self.grounding is not None:
            grounded, ungrounded = self.grounding.check(screened, judge.rubric, dim, by_item,
                                                        embedder)
        else:
            grounded = [g for g in screened if g.sources]
            ungrounded = [g.rejected("no_sources") for g in screened if not g.sources]
        rejected += ungrounded
        existing = djudge.guidelines
        if grounded:
            vec_old = embedder.embed([g.text for g in existing]) if existing else _empty(embedder)
            pool, dupes = merge_duplicates(existing, grounded, vec_old,
                                           embedder.embed([g.text for g in grounded]),
                                           self.dedup_threshold)
            djudge.set_guidelines(pool)
            rejected += dupes
        self._reject(djudge, rejected, rep)
        if self.validate:
            self._validate(judge, dim, fresh, rnd.before, rep, cache=rnd.cache)
        # Useful: kept after validation, or folded into a guideline the dimension keeps (the
        # mode restated something known, which still shows that it works).
        merged = sum(1 for g in rejected if g.reason == "duplicate")
        texts = {g.text for g in grounded} - rnd.before
        return merged + sum(1 for g in djudge.guidelines if g.text in texts and g.mode == mode)

    @staticmethod
    def _reject(djudge: Any, rejected: list[Guideline], rep: DimensionReport) -> None:
        djudge.rejected = djudge.rejected + list(rejected)
        for g in rejected:
            rep.rejected[g.reason or "?"] = rep.rejected.get(g.reason or "?", 0) + 1

    def _tally(self, djudge: Any, before: set[str], rep: DimensionReport) -> None:
        """Set ``rep.kept``, ``kept_by_mode`` and ``unvalidated`` from the kept guidelines."""
        new = [g for g in djudge.guidelines if g.text not in before]
        rep.kept = len(new)
        rep.kept_guidelines = [{"text": g.text, "mode": g.mode, "sources": list(g.sources)}
                               for g in new]
        rep.kept_by_mode = {m: n for m in MODES
                            if (n := sum(1 for g in new if g.mode == m))}
        rep.unvalidated = (sum(1 for g in new if g.validation is None) if self.validate
                           else 0)

    # An LM whose cited trial failed is not asked to cite again on the other dimensions of
    # the same compile (on the embedded 135M model one such call takes minutes). The memo is
    # keyed by the judge being compiled (a fresh copy per compile), so a compile never
    # depends on what earlier compiles saw: same inputs, same judge.

    def _may_cite(self, judge: RubricJudge, lm: Any) -> bool:
        return not any(x is lm for x in _CANNOT_CITE.get(judge, ()))

    def _remember_cannot_cite(self, judge: RubricJudge, lm: Any) -> None:
        _CANNOT_CITE[judge] = [*_CANNOT_CITE.get(judge, ()), lm]

    # --- validation -----------------------------------------------------------------------

    def _validate(self, judge: RubricJudge, dim: str, episodes: list[Episode],
                  before: set[str], rep: DimensionReport, *,
                  cache: dict[str, float] | None = None) -> None:
        """Reject the guidelines of ``dim`` added since ``before`` (texts) that make the judge
        agree less with the expert labels on training examples they did not come from.

        Each guideline not validated yet (``validation is None``), best-supported first, is
        tested on up to ``validation_items`` examples of ``episodes`` that are not among its
        sources (taken in a seeded order that alternates the expert score levels). The judge
        LM, without demos, scores them with the guidelines that existed before this compile
        (computed once per example and kept in ``cache``) and with those plus this guideline.
        The guideline is rejected (``failed_validation``) when the mean error grows;
        otherwise it records ``validation=(without, with)``.

        Cost, in judge calls: one per held-out example for the baseline, plus
        ``validation_items`` per guideline; at most ``validation_budget`` per dimension and
        compile (``rep.validation_calls``). A guideline the budget does not reach, or with no
        judge LM to test it (the judge's own, else DSPy's configured one), is kept and
        counted in ``rep.unvalidated``. Calling it again only tests what is still untested.
        """
        djudge = judge.judges[dim]
        todo = sorted((g for g in djudge.guidelines
                       if g.text not in before and g.validation is None),
                      key=lambda g: -g.support)
        lm = djudge.predict.lm or dspy.settings.lm
        if not todo or lm is None or not episodes:
            self._tally(djudge, before, rep)
            return
        cache = {} if cache is None else cache
        order = self._held_out_order(dim, episodes)
        probe = _probe(djudge)
        base = [g for g in djudge.guidelines if g.text in before]
        spent = rep.validation_calls
        results: dict[str, tuple[float, float]] = {}
        for g in todo:
            sources = set(g.sources)
            sample = [e for e in order if e.item_id not in sources][:self.validation_items]
            missing = [e for e in sample if e.id not in cache]
            if not sample or spent + len(missing) + len(sample) > self.validation_budget:
                continue
            if missing:
                cache.update(zip([e.id for e in missing], _errors(probe, base, missing, lm),
                                 strict=True))
            with_it = _errors(probe, [*base, g], sample, lm)
            spent += len(missing) + len(sample)
            results[g.text] = (round(sum(cache[e.id] for e in sample) / len(sample), 4),
                               round(sum(with_it) / len(sample), 4))
        rep.validation_calls = spent
        kept, failed = [], []
        for g in djudge.guidelines:
            if g.text not in results:
                kept.append(g)
                continue
            checked = replace(g, validation=results[g.text])
            without, with_it = results[g.text]
            (failed if with_it > without else kept).append(checked)
        djudge.set_guidelines(kept)
        self._reject(djudge, [g.rejected("failed_validation") for g in failed], rep)
        self._tally(djudge, before, rep)

    def _held_out_order(self, dim: str, episodes: list[Episode]) -> list[Episode]:
        """Episodes in a seeded order that takes the expert score levels in turn, so that
        even a small sample holds examples of several levels."""
        rng = random.Random(f"{self.seed}:{dim}")
        levels: dict[str, list[Episode]] = {}
        for e in sorted(episodes, key=lambda e: e.item_id):
            levels.setdefault(format_score(e.score), []).append(e)
        queues = []
        for level in sorted(levels):
            group = levels[level]
            rng.shuffle(group)
            queues.append(group)
        order: list[Episode] = []
        while any(queues):
            for q in queues:
                if q:
                    order.append(q.pop(0))
        return order

    # --- reflection: cited ----------------------------------------------------------------

    def _propose_cited(self, judge: RubricJudge, dim: str, fresh: list[Episode], lm: Any,
                       rep: DimensionReport, part: str) -> list[Guideline]:
        """Cited proposals from the ``"first"`` batch (no retry), the ``"rest"`` or ``"all"``
        batches; counts calls in ``rep.reflection_calls`` and failures in
        ``rep.unprocessed_examples``."""
        with CostMeter(lm) as meter:
            proposals, unprocessed = self._reflect(judge, dim, fresh, lm, part=part)
        rep.reflection_calls += meter.calls
        rep.unprocessed_examples += unprocessed
        return proposals

    def _reflect(self, judge: RubricJudge, dim: str, fresh: list[Episode], lm: Any, *,
                 part: str = "all") -> tuple[list[Guideline], int]:
        """Distil proposals from ``fresh`` in context-sized batches; returns the proposals and
        how many examples produced nothing because every retry failed. ``part``: ``"all"``
        batches, only the ``"first"`` (not retried in halves: it is a trial) or the
        ``"rest"``."""
        spec = judge.rubric.dimension(dim)
        rubric_text = instructions_for(judge.rubric, spec)
        existing = render_guidelines(judge.judges[dim].guidelines) or "(none yet)"
        count = lm_token_counter(lm)
        room = (lm_context_window(lm) - _REFLECTION_MAX_TOKENS - _REFLECTION_OVERHEAD_TOKENS
                - count(rubric_text) - count(existing))
        rendered = [self._render_example(e, judge, count) for e in fresh]
        batches = _pack(list(range(len(fresh))), [count(r) for r in rendered],
                        max(room, 64), self.batch_examples)
        if part == "first":
            batches = batches[:1]
        elif part == "rest":
            batches = batches[1:]
        proposals: list[Guideline] = []
        unprocessed = 0
        for batch in batches:
            got, failed = self._reflect_batch(batch, fresh, rendered, rubric_text, existing,
                                              dim, lm, split=part != "first")
            proposals += got
            unprocessed += failed
        return proposals, unprocessed

    def _reflect_batch(self, batch: list[int], fresh: list[Episode], rendered: list[str],
                       rubric_text: str, existing: str, dim: str, lm: Any, *,
                       split: bool = True) -> tuple[list[Guideline], int]:
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
            if len(batch) == 1 or not split:
                return [], len(batch)
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
            out.append(Guideline(body, dim, sources, support=max(len(sources), 1),
                                 mode="cited"))
        return out, 0

    def _render_example(self, e: Episode, judge: RubricJudge, count: Any, *,
                        item_tokens: int | None = None, rationale_tokens: int | None = None
                        ) -> str:
        """An example as reflection prompts show it: expert score, rationale (cut to
        ``rationale_tokens`` when given) and an excerpt of the item: each input cut to
        ``demo_input_tokens``, or, with ``item_tokens``, all inputs together cut to about
        ``item_tokens`` (shared equally, at least 24 each)."""
        names = [name for name in judge.rubric.input_names if e.inputs.get(name)]
        budget = (max(24, item_tokens // max(len(names), 1)) if item_tokens
                  else self.demo_input_tokens)
        excerpt = "\n".join(f"{name}: {truncate(e.inputs[name], budget, count)}"
                            for name in names)
        rationale = e.rationale or "(none given)"
        if rationale_tokens is not None:
            rationale = truncate(rationale, rationale_tokens, count)
        return (f"expert score: {format_score(e.score)}\n"
                f"expert rationale: {rationale}\n"
                f"item excerpt:\n{excerpt}")

    # --- reflection: per-example ----------------------------------------------------------

    def _propose_per_example(self, judge: RubricJudge, dim: str, fresh: list[Episode],
                             embedder: Embedder, lm: Any, rep: DimensionReport
                             ) -> list[Guideline]:
        """One short call per contrasting pair (or lone example), at most
        ``max_reflection_calls``; each answer is one sentence whose sources are the pair."""
        units = _contrast_units(fresh, embedder)
        todo, skipped = units[:self.max_reflection_calls], units[self.max_reflection_calls:]
        rep.unprocessed_examples += sum(len(u) for u in skipped)
        count = lm_token_counter(lm)
        rubric_text = _brief_rubric(judge, dim)
        item_tokens = min(self.demo_input_tokens, _PER_EXAMPLE_ITEM_TOKENS)
        writer = dspy.Predict(WriteGuideline)

        def reflect(unit: tuple[int, ...]) -> str | None:
            shown = [self._render_example(fresh[i], judge, count, item_tokens=item_tokens,
                                          rationale_tokens=_PER_EXAMPLE_RATIONALE_TOKENS)
                     for i in unit]
            examples = (shown[0] if len(shown) == 1 else
                        "\n\n".join(f"Example {'AB'[n]}\n{s}" for n, s in enumerate(shown)))
            try:
                with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
                    pred = writer(dimension=rubric_text, examples=examples,
                                  config={"max_tokens": _PER_EXAMPLE_MAX_TOKENS})
                return _clean_guideline(pred.guideline)
            except Exception as exc:  # one unparseable answer costs its unit only
                log.info("per-example reflection on %s failed (%s)",
                         [fresh[i].item_id for i in unit], type(exc).__name__)
                return None

        with CostMeter(lm) as meter:
            answers = _map_calls(reflect, todo, lm)
        rep.reflection_calls += meter.calls
        out = []
        for unit, text in zip(todo, answers, strict=True):
            if text is None:
                rep.unprocessed_examples += len(unit)
                continue
            ids = tuple(fresh[i].item_id for i in unit)
            out.append(Guideline(text, dim, ids, support=len(ids), mode="per-example"))
        return out


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


@dataclass
class _Round:
    """One dimension's distillation in one compile: the guideline texts it started with and
    the baseline validation errors per example (``episode id -> error``)."""

    before: set[str]
    cache: dict[str, float] = field(default_factory=dict)


def _probe(djudge: Any) -> Any:
    """A private copy of a dimension judge to validate with: shares the LM, has no demos."""
    memo: dict[int, Any] = {id(djudge.memory): None}
    if djudge.predict.lm is not None:
        memo[id(djudge.predict.lm)] = djudge.predict.lm
    probe = copy.deepcopy(djudge, memo)
    probe.memory, probe.k = None, 0
    return probe


def _errors(probe: Any, guidelines: list[Guideline], sample: list[Episode], lm: Any
            ) -> list[float]:
    """Per example, the distance of the probe's score to the expert's (one judge call each);
    an N/A mismatch or a failed judgment costs the whole scale."""
    probe.set_guidelines(guidelines)
    worst = float(max(probe.rubric.scale) - min(probe.rubric.scale))

    names = probe.rubric.input_names

    def error(ep: Episode) -> float:
        with dspy.context(lm=lm):  # absent optional inputs are empty, as RubricJudge gives them
            got = probe(**{name: ep.inputs.get(name, "") for name in names})
        if got.failed or (got.score is None) != (ep.score is None):
            return worst
        return float(abs(got.score - ep.score)) if got.score is not None else 0.0

    return _map_calls(error, sample, lm)


def _map_calls(fn: Any, jobs: Sequence[Any], lm: Any) -> list[Any]:
    """``[fn(job) for job in jobs]``, from up to ``[lm] concurrency`` threads (an in-process
    model is called in sequence); results in input order."""
    threads = lm_concurrency(lm)
    if len(jobs) < 2 or threads == 1:
        return [fn(job) for job in jobs]
    # Threads start with DSPy's defaults: carry the caller's LM, adapter and usage tracker.
    carried = {k: v for k, v in dspy.settings.config.items()
               if k in ("lm", "adapter", "usage_tracker")}

    def run(job: Any) -> Any:
        with dspy.context(**carried):
            return fn(job)

    with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
        return list(pool.map(run, jobs))


def _contrast_units(fresh: list[Episode], embedder: Embedder) -> list[tuple[int, ...]]:
    """Indices of ``fresh`` grouped for per-example reflection: contrasting pairs first (two
    examples with different expert scores, most similar items first by the embedder, each
    example in one pair at most), then the examples left alone, in input order."""
    n = len(fresh)
    if n < 2:
        return [(i,) for i in range(n)]
    vectors = embedder.embed([item_text(e.inputs) for e in fresh])
    sims = vectors @ vectors.T
    candidates = sorted((-round(float(sims[i, j]), 6), i, j)
                        for i in range(n) for j in range(i + 1, n)
                        if fresh[i].score != fresh[j].score)
    used: set[int] = set()
    units: list[tuple[int, ...]] = []
    for _, i, j in candidates:
        if i not in used and j not in used:
            units.append((i, j))
            used |= {i, j}
    return units + [(i,) for i in range(n) if i not in used]


def _brief_rubric(judge: RubricJudge, dim: str) -> str:
    """The dimension and its levels in a few lines (the per-example prompt stays short)."""
    spec = judge.rubric.dimension(dim)
    lines = [f"{spec.name}: {spec.description}".strip()]
    lines += [f"{level} = {spec.levels[level]}" for level in judge.rubric.scale]
    if spec.allows_na:
        lines.append(f"N/A = {spec.na}")
    return "\n".join(lines)


_LEAD_IN = re.compile(r"^(?:(?:new\s+)?(?:guideline|rule)\s*\d*\s*[:.\-]\s*"
                      r"|[-*\u2022]\s+|\d+[.)]\s+)", flags=re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
# A word: a run of two or more letters, or one ideograph/kana (scripts written without spaces).
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\d_]{2,}")
_MIN_SENTENCE_WORDS = 3
_PAIR_REF = re.compile(r"\s*\((?:see |as in |like )?examples?\s+[AB](?:\s*(?:and|,)\s*[AB])?\)",
                       flags=re.IGNORECASE)


def _clean_guideline(raw: Any) -> str:
    """A per-example answer as a guideline: one line, no list marker, label or example
    reference, no surrounding quotes, and only its leading sentences that read as prose (a
    small model goes on with "1. Example A. 2. 3." or "#1 #2 #3" after a sentence); an
    answer over ``MAX_GUIDELINE_CHARS`` keeps its first sentence when that fits (one sentence
    was asked for; a small model goes on, or its answer is cut by the token budget)."""
    text = " ".join(str(raw or "").split())
    text = re.sub(r"\s+([.,;:!?])", r"\1", _PAIR_REF.sub("", _EXAMPLE_REF.sub("", text)))
    for _ in range(2):  # "- Guideline: ..." has two lead-ins
        text = _LEAD_IN.sub("", text.strip().strip("\"'`").strip())
    text = text.strip().strip("\"'`").strip()
    sentences = _SENTENCE_END.split(text)
    prose = list(itertools.takewhile(lambda x: _words(x) >= _MIN_SENTENCE_WORDS, sentences))
    if prose and len(prose) < len(sentences):
        text = " ".join(prose)
    if len(text) > MAX_GUIDELINE_CHARS:
        first = sentences[0]
        text = first if len(first) <= MAX_GUIDELINE_CHARS else text
    return text


def _words(text: str) -> int:
    """Words of two or more letters (any script): what prose is made of, unlike "#1", "3."
    or a cut-off "E1"."""
    return len(_WORD.findall(text))


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


def _bar(total: int, enabled: bool, desc: str = "aligning", unit: str = "dim") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


def align_report_table(report: CompileReport) -> str:
    """The compile report as a small text table (used by the CLI)."""
    head = f"{'dimension':<28}{'examples':>9}{'new':>5}{'kept':>6}{'rejected':>9}{'calls':>7}"
    lines = [head, "-" * len(head)]
    for d in report.dimensions:
        lines.append(f"{d.dimension:<28}{d.examples:>9}{d.new_examples:>5}{d.kept:>6}"
                     f"{sum(d.rejected.values()):>9}{d.lm_calls:>7}")
    return "\n".join(lines)


__all__ = ["CompileReport", "DimensionReport", "MemAlign", "Sequence"]
