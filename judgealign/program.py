"""The judge program: one ``DimensionJudge`` per rubric dimension, held by a ``RubricJudge``.

Both are ``dspy.Module``s, so any DSPy optimizer can compile them. MemAlign adds two kinds of
state: guidelines, rendered into each dimension's instructions (so ``dump_state`` carries
them), and an episodic memory shared by the dimensions, from which each call retrieves its
own demos and passes them with ``demos=`` (never stored on the predictor, so concurrent calls
cannot see each other's demos).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dspy

from judgealign.adapter import DEFAULT_LAYOUT, adapter_for, check_layout
from judgealign.calibration import (
    DEFAULT_POLICY,
    Calibration,
    apply_policy,
    check_policy,
    judgment_probabilities,
    level_labels,
    logprob_request,
    neighbour_distribution,
    score_of,
)
from judgealign.errors import ArtifactError, ItemError
from judgealign.items import TokenCounter, estimate_tokens, fit_fields, truncate
from judgealign.joint import DEFAULT_MODE, check_mode, judge_jointly
from judgealign.lm import (
    configured_lm,
    is_answer_error,
    lm_concurrency,
    lm_context_window,
    lm_token_counter,
    retry_config,
)
from judgealign.memory.semantic import Guideline, render_guidelines
from judgealign.results import DimensionResult, JudgeResult
from judgealign.signatures.rubric import (
    NA,
    Rubric,
    build_signature,
    format_score,
    instructions_for,
    parse_score,
    resolve_rubric,
)
from judgealign.state import STATE_FORMAT, validate_episode, validate_state

log = logging.getLogger(__name__)

# Adapter instructions, field headers and the answer itself, beyond what we count ourselves.
_PROMPT_OVERHEAD_TOKENS = 350
# The item-first layout's scaffolding (data rule, fences, acknowledgement, question) and each
# fenced, numbered demo cost more; measured with SmolLM2's tokenizer on the ml_notebook
# rubric: about 455 fixed tokens and 112 per demo, against 300 and 40 for the classic layout.
_LAYOUT_OVERHEAD_TOKENS = {"classic": (_PROMPT_OVERHEAD_TOKENS, 20), "item-first": (500, 110)}
_MIN_ITEM_TOKENS = 256


class DimensionJudge(dspy.Module):
    """Judges one dimension of a rubric with one ``dspy.Predict``.

    Parameters
    ----------
    rubric, dimension
        The rubric and the id of the dimension judged.
    k
        Demos retrieved from episodic memory per call (0 disables retrieval).
    demo_input_tokens
        Token budget of each demo's item text; its score and rationale are always kept whole.
    item_tokens
        Cap on the judged item's tokens (``None``: whatever the context leaves); a small
        local model judges faster on a shorter excerpt.
    max_attempts
        LM calls before an unparseable answer is recorded as a failure.
    layout
        The prompt layout (:mod:`judgealign.adapter`): ``"item-first"`` (default; the item
        first and fenced as data, shared by all dimensions) or ``"classic"`` (DSPy's
        JSONAdapter: instructions first, the item last and unfenced).
    policy
        The score policy (:mod:`judgealign.calibration`): ``"sampled"``, ``"expected"`` or
        ``"calibrated"`` (default; ``expected`` until MemAlign fits ``calibration``).
    """

    def __init__(self, rubric: Rubric, dimension: str, *, k: int = 3,
                 demo_input_tokens: int = 350, item_tokens: int | None = None,
                 max_attempts: int = 2, layout: str = DEFAULT_LAYOUT,
                 policy: str = DEFAULT_POLICY) -> None:
        super().__init__()
        self.rubric = rubric
        self.spec = rubric.dimension(dimension)
        self.dimension = self.spec.id
        self.predict = dspy.Predict(build_signature(rubric, self.spec))
        self.base_instructions = instructions_for(rubric, self.spec)
        self.guidelines: list[Guideline] = []
        self.rejected: list[Guideline] = []
        self.memory: Any = None  # an EpisodicMemory shared with the other dimensions
        self.k = k
        self.demo_input_tokens = demo_input_tokens
        self.item_tokens = item_tokens
        self.max_attempts = max_attempts
        self.layout = check_layout(layout)
        self.policy = check_policy(policy)
        self.calibration: Calibration | None = None  # fitted by MemAlign (calibrated policy)

    # --- semantic memory ------------------------------------------------------------------

    def set_guidelines(self, guidelines: Sequence[Guideline]) -> None:
        """Replace the guidelines and re-render the predictor's instructions from them."""
        self.guidelines = list(guidelines)
        self.predict.signature = self.predict.signature.with_instructions(self.instructions)

    @property
    def instructions(self) -> str:
        return _instructions(self.base_instructions, self.guidelines)

    # --- judging --------------------------------------------------------------------------

    def resolve_lm(self) -> Any:
        """The LM this dimension judges with: its own, else DSPy's configured LM, else the
        LM of judgealign's configuration (``judgealign.toml``, the environment, else the
        embedded model)."""
        return self.predict.lm or dspy.settings.lm or configured_lm()

    def forward(self, *, _vector: Any = None, _exclude: Collection[str] = frozenset(),
                _collect: bool = False, **inputs: str) -> DimensionResult:
        """Judge one item. ``_vector``: its retrieval vector when the caller has it;
        ``_exclude``: item ids whose episodes must not be retrieved (MemAlign's calibration
        features leave an item's own label out); ``_collect``: fill ``neighbours`` whatever
        the policy (MemAlign's calibration features)."""
        lm = self.resolve_lm()
        count = lm_token_counter(lm)
        embed = getattr(self.memory, "embed_query", None)  # a few-shot DemoSet has none
        if _vector is None and embed is not None and self.k > 0:
            _vector = embed(inputs)  # retrieval and neighbours share it
        demos, episodes, sims = self._demos(inputs, count, _vector, _exclude)
        retrieved = [ep.item_id for ep in episodes]
        neighbours = self._neighbours(episodes, sims, _vector) if (
            _collect or self._uses_neighbours()) else {}
        inputs, demos = self._fit(inputs, demos, lm, count)
        last_error, raw = "", None
        ask = logprob_request(lm)  # level probabilities come from the same call
        for attempt in range(self.max_attempts):
            # A retry must be a different request: resending the same one returns the same
            # unparseable answer from a cache (or from a greedy model).
            config = {**retry_config(lm, attempt), **ask}
            try:
                with dspy.context(lm=lm, adapter=adapter_for(self.layout, self.rubric)):
                    pred = self.predict(**inputs, demos=demos, config=config)
                score = parse_score(pred.score, scale=self.rubric.scale,
                                    allow_na=self.spec.allows_na)
                return self._result(pred, score, retrieved, neighbours)
            except Exception as exc:  # one dimension's failure must never sink the batch
                last_error = f"{type(exc).__name__}: {exc}"
                raw = getattr(exc, "lm_response", None) or raw
                log.debug("dimension %s failed: %s", self.dimension, last_error)
                if ask and not is_answer_error(exc):
                    ask = {}  # a provider that lists logprobs but refuses them: ask no more
        return DimensionResult(self.dimension, None, "", retrieved, error=last_error[:2000],
                               raw=raw)

    def _result(self, pred: Any, score: int | None, retrieved: list[str],
                neighbours: dict[str, float], *, field: str = "score",
                rationale: Any = None) -> DimensionResult:
        """The verdict on a parsed answer: its level probabilities and the policy's score.
        ``field``: the answer's score field (joint mode: ``<dim>_score``); ``rationale``: the
        rationale when it is not ``pred.rationale``."""
        labels = level_labels(self.rubric.scale, self.spec.allows_na)
        sampled = format_score(score)
        probs, source = judgment_probabilities(pred.get("logprobs"), labels, sampled,
                                               field_name=field)
        rationale = pred.get("rationale") if rationale is None else rationale
        verdict = apply_policy(self.policy, probs, sampled, self.rubric.scale,
                               self.calibration, neighbours)
        return DimensionResult(self.dimension, score_of(verdict.label),
                               str(rationale or "").strip(), retrieved,
                               probabilities=probs, probabilities_source=source,
                               policy=verdict.policy, sampled_score=score,
                               calibrated=verdict.calibrated, neighbours=neighbours)

    def _uses_neighbours(self) -> bool:
        return (self.policy == "calibrated" and self.calibration is not None
                and self.calibration.kind == "logistic")

    def _neighbours(self, episodes: Sequence[Any], sims: Sequence[float] | None,
                    vector: Any) -> dict[str, float]:
        """The retrieved episodes' labels weighted by cosine similarity to the item:
        ``sims`` from the retrieval itself, else (a memory that gives none, such as a
        few-shot baseline's demo set) by embedding the retrieved items again."""
        from judgealign.memory.records import item_text

        labels = level_labels(self.rubric.scale, self.spec.allows_na)
        scores = [ep.score for ep in episodes]
        if sims is None:
            embedder = getattr(self.memory, "embedder", None)
            if not episodes or vector is None or embedder is None:
                return neighbour_distribution(scores, [], labels)
            vectors = embedder.embed([item_text(ep.inputs) for ep in episodes])
            sims = [float(s) for s in vectors @ vector]
        return neighbour_distribution(scores, sims, labels)

    def _demos(self, inputs: Mapping[str, str], count: TokenCounter, vector: Any = None,
               exclude: Collection[str] = frozenset()
               ) -> tuple[list[dspy.Example], list[Any], list[float] | None]:
        """The call's demos, the episodes they come from (none for an optimizer's stored
        demos) and their similarities to the item when the memory reports them; episodes
        of items in ``exclude`` are never retrieved."""
        if self.memory is None or self.k <= 0:
            # Demos a DSPy optimizer stored on the predictor still apply, under the same
            # per-demo token budget as retrieved ones (whole notebooks would crowd out the item).
            names = self.rubric.input_names
            return [d.copy(**{n: truncate(str(d[n]), self.demo_input_tokens, count)
                              for n in names if d.get(n) is not None})
                    for d in self.predict.demos], [], None
        sims: list[float] | None = None
        scored = getattr(self.memory, "retrieve_scored", None)
        if scored is not None:
            found = scored(inputs, dimension=self.dimension, k=self.k, vector=vector,
                           exclude=exclude)
            episodes, sims = [e for e, _ in found], [s for _, s in found]
        else:
            # A memory without exclusion (a baseline's demo set): ask for as many more as
            # may be dropped, since excluded items come first when nearest.
            episodes = self.memory.retrieve(inputs, dimension=self.dimension,
                                            k=self.k + len(exclude), vector=vector)
            episodes = [ep for ep in episodes if ep.item_id not in exclude][: self.k]
        demos = []
        for ep in episodes:
            fields = {name: truncate(ep.inputs.get(name, ""), self.demo_input_tokens, count)
                      for name in self.rubric.input_names}
            demos.append(dspy.Example(**fields, score=format_score(ep.score),
                                      rationale=ep.rationale or "(no rationale given)"))
        return demos, episodes, sims

    def _fit(self, inputs: Mapping[str, str], demos: list[dspy.Example], lm: Any,
             count: TokenCounter) -> tuple[dict[str, str], list[dspy.Example]]:
        """Fit item + instructions + demos into the LM's context, dropping demos last-first."""
        window = lm_context_window(lm)
        max_out = int((getattr(lm, "kwargs", {}) or {}).get("max_tokens") or 256)
        fixed, per_demo = _LAYOUT_OVERHEAD_TOKENS[self.layout]
        room = window - max_out - fixed - count(self.instructions)
        demo_cost = [sum(count(str(v)) for v in d.toDict().values()) + per_demo for d in demos]
        while demos and room - sum(demo_cost) < _MIN_ITEM_TOKENS:
            demos, demo_cost = demos[:-1], demo_cost[:-1]
        budget = room - sum(demo_cost)
        if self.item_tokens is not None:
            budget = min(budget, self.item_tokens)
        return fit_fields(dict(inputs), budget, count), demos



class RubricJudge(dspy.Module):
    """A judge of every dimension of a rubric.

    Call it with the rubric's inputs (``judge(notebook=text, task=prompt)``) to get a
    :class:`JudgeResult`; :meth:`batch` judges many items.

    Parameters
    ----------
    rubric
        A :class:`Rubric`, a built-in rubric name (``"ml_notebook"``) or a rubric file.
    lm
        Fixes the LM of every dimension. ``None``: DSPy's configured LM when there is one,
        else the LM of judgealign's configuration (``judgealign.toml``, the environment, else
        the embedded model).
    k, demo_input_tokens, item_tokens, layout, policy
        See :class:`DimensionJudge`. Defaults 3, 350, None, ``"item-first"``,
        ``"calibrated"``.
    mode
        ``"per-dimension"`` (default: one call per dimension) or ``"joint"`` (one call per
        item scores every dimension; see :mod:`judgealign.joint`).

    Its whole state -- guidelines (kept and rejected), per-dimension options, score policies
    and calibrations, the ledger of distilled examples and the episodic memory's records --
    goes through :meth:`dump_state`
    and :meth:`load_state` (DSPy's protocol, extended); :meth:`save` writes it as a judge
    directory.
    """

    def __init__(self, rubric: Rubric | str, *, lm: Any = None, k: int = 3,
                 demo_input_tokens: int = 350, item_tokens: int | None = None,
                 layout: str = DEFAULT_LAYOUT, policy: str = DEFAULT_POLICY,
                 mode: str = DEFAULT_MODE) -> None:
        super().__init__()
        rubric = resolve_rubric(rubric)
        self.mode = check_mode(mode)
        self.rubric = rubric
        self.judges = {d.id: DimensionJudge(rubric, d.id, k=k, demo_input_tokens=demo_input_tokens,
                                            item_tokens=item_tokens, layout=layout,
                                            policy=policy)
                       for d in rubric.dimensions}
        # dspy discovers sub-modules through attributes, not dict values.
        for dim_id, judge in self.judges.items():
            setattr(self, f"dim_{dim_id}", judge)
        self.memory: Any = None
        self.seen: dict[str, str] = {}  # episode id -> content hash, for incremental alignment
        self.report: Any = None
        self.artifact_sha256: str | None = None  # set when loaded from a saved judge
        if lm is not None:
            self.set_lm(lm)

    @property
    def dimensions(self) -> list[str]:
        return list(self.judges)

    @property
    def layout(self) -> str:
        """The prompt layout: ``"classic"`` only when every dimension uses it."""
        layouts = {j.layout for j in self.judges.values()}
        return "classic" if layouts == {"classic"} else DEFAULT_LAYOUT

    def attach_memory(self, memory: Any) -> None:
        """Share one episodic memory between all dimensions (``None`` detaches it)."""
        self.memory = memory
        for judge in self.judges.values():
            judge.memory = memory

    def _query_vectors(self, items: Sequence[Mapping[str, str]], wanted: Sequence[str]
                       ) -> list[Any]:
        """Each item's retrieval vector, embedded once for all its dimensions."""
        embed = getattr(self.memory, "embed_query", None)
        if embed is None or not any(self.judges[d].k > 0 for d in wanted):
            return [None] * len(items)
        return [embed(item) for item in items]

    def forward(self, *, item_id: str | None = None, dimensions: Iterable[str] | None = None,
                **inputs: str) -> JudgeResult:
        inputs = self._check_inputs(inputs)
        wanted = self._check_dimensions(dimensions)
        vector = self._query_vectors([inputs], wanted)[0]
        # The fallback LM is resolved once for all dimensions, not read from the
        # configuration again by each of them.
        with dspy.context(lm=dspy.settings.lm or self._lm()):
            if self.mode == "joint":
                return judge_jointly(self, inputs, wanted, vector=vector, item_id=item_id)
            return JudgeResult(item_id, {d: self.judges[d](_vector=vector, **inputs)
                                         for d in wanted})

    def _lm(self) -> Any:
        """The LM this judge's calls go to when a dimension has none of its own."""
        return self.get_lm() or dspy.settings.lm or configured_lm()

    def batch(self, items: Sequence[Mapping[str, str]], *, item_ids: Sequence[str] | None = None,
              dimensions: Iterable[str] | None = None, num_threads: int | None = None,
              progress: bool = False) -> list[JudgeResult]:
        """Judge many items; results come back in input order.

        Remote LMs are called from ``num_threads`` threads (default: ``[lm] concurrency``,
        8): that many calls are in flight at most, and each retries a rate-limit answer
        (HTTP 429) with exponential backoff (``[lm] num_retries``). An in-process model that is not
        thread-safe is called in sequence whatever ``num_threads`` says. The progress bar
        (``progress=True``) shows the ETA and the running cost in tokens (and dollars when
        litellm prices the model). In joint mode a job is an item, else an (item, dimension).
        """
        ids = list(item_ids) if item_ids is not None else [None] * len(items)
        if len(ids) != len(items):
            raise ValueError(f"{len(items)} items but {len(ids)} item_ids")
        wanted = self._check_dimensions(dimensions)
        lm = self._lm()
        threads = lm_concurrency(lm, num_threads)
        # Consecutive calls should share the longest prompt prefix, which a local model
        # reuses from its KV cache and a provider's prompt cache bills less: the item under
        # the item-first layout (item-major order: all dimensions of an item in a row; thread
        # pools take jobs in this order, so remote calls are submitted item by item too),
        # the instructions under the classic one (dimension-major).
        if self.mode == "joint":
            jobs = [(i, "") for i in range(len(items))]  # one call judges all of ``wanted``
        elif self.layout == "classic":
            jobs = [(i, d) for d in wanted for i in range(len(items))]
        else:
            jobs = [(i, d) for i in range(len(items)) for d in wanted]
        checked = [self._check_inputs(dict(item)) for item in items]
        vectors = self._query_vectors(checked, wanted)
        with _JudgingProgress(len(jobs), progress) as bar:
            # Copied inside the bar's cost meter, so judging threads report to it.
            settings = dspy.settings.config.copy()
            settings["lm"] = settings.get("lm") or lm  # resolved once, not per call

            def run(job: tuple[int, str]) -> DimensionResult | JudgeResult:
                i, dim = job
                # Threads start with DSPy's defaults: carry the caller's LM, adapter and usage
                # tracker (cost meters) into them.
                carried = ("lm", "adapter", "usage_tracker")
                with dspy.context(**{k: v for k, v in settings.items() if k in carried}):
                    if dim:
                        result = self.judges[dim](_vector=vectors[i], **checked[i])
                    else:
                        result = judge_jointly(self, checked[i], wanted, vector=vectors[i],
                                               item_id=ids[i])
                bar.advance()
                return result

            if threads == 1:
                done = [run(job) for job in jobs]
            else:
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    done = list(pool.map(run, jobs))
        if self.mode == "joint":
            return list(done)
        out = [JudgeResult(ids[i], {}) for i in range(len(items))]
        for (i, dim), result in zip(jobs, done, strict=True):
            out[i].dimensions[dim] = result
        return out

    def unalign(self, item_ids: Iterable[str]) -> RubricJudge:
        """A copy that has forgotten these items: their episodes, every guideline (kept or
        rejected) all of whose sources are gone, and their entries in the ledger. Guidelines
        with a surviving source stay; nothing is re-distilled."""
        gone = set(item_ids)
        new = self.deepcopy()
        if new.memory is not None:
            new.memory.remove(gone)
        for judge in new.judges.values():
            judge.set_guidelines(_forget(judge.guidelines, gone))
            judge.rejected = _forget(judge.rejected, gone)
            if judge.calibration is not None:
                # Refitted on the rows that neither are nor retrieved a forgotten item.
                judge.calibration = judge.calibration.forget(gone)
        new.seen = {k: v for k, v in new.seen.items() if k.split("::", 1)[0] not in gone}
        return new

    def set_policy(self, policy: str, dimensions: Iterable[str] | None = None) -> None:
        """Score ``dimensions`` (default: all) by ``policy``: ``"sampled"``, ``"expected"`` or
        ``"calibrated"`` (see :mod:`judgealign.calibration`)."""
        check_policy(policy)
        for dim in self._check_dimensions(dimensions):
            self.judges[dim].policy = policy

    def deepcopy(self) -> RubricJudge:
        """A copy with its own memories that shares the LM objects (model handles are big)."""
        memo = {id(j.predict.lm): j.predict.lm for j in self.judges.values()
                if j.predict.lm is not None}
        return copy.deepcopy(self, memo)

    def get_lm(self) -> Any:
        """The LM every dimension uses (``None``: none of its own)."""
        lms = {id(j.predict.lm): j.predict.lm for j in self.judges.values()}
        return next(iter(lms.values())) if len(lms) == 1 else None

    # --- state (DSPy's dump_state/load_state, extended) -----------------------------------

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """The judge's whole state as JSON data (see :mod:`judgealign.state`); the LM is never
        part of it (it is chosen when the judge is loaded)."""
        from judgealign.memory.episodic import EpisodicMemory

        memory = self.memory if isinstance(self.memory, EpisodicMemory) else None
        report = getattr(self.report, "to_dict", None)
        return {
            "format": STATE_FORMAT,
            "rubric": self.rubric.model_dump(mode="json"),
            "dimensions": {dim: {
                "k": j.k, "demo_input_tokens": j.demo_input_tokens,
                "item_tokens": j.item_tokens,
                "guidelines": [g.to_dict() for g in j.guidelines],
                "rejected": [g.to_dict() for g in j.rejected],
                "predictor": {"signature": j.predict.signature.dump_state(),
                              "demos": [d.toDict() if hasattr(d, "toDict") else dict(d)
                                        for d in j.predict.demos]},
                "policy": j.policy,
                "calibration": j.calibration.to_state() if j.calibration is not None else None,
                "extra": {"layout": j.layout},
            } for dim, j in self.judges.items()},
            "mode": self.mode,
            "seen": dict(sorted(self.seen.items())),
            "episodic": memory.dump_state() if memory is not None else None,
            "report": report() if callable(report) else (
                self.report if isinstance(self.report, dict) else None),
        }

    def load_state(self, state: dict[str, Any], *, embedder: Any = None,
                   memory: Any = None) -> RubricJudge:
        """Restore :meth:`dump_state`'s output into this judge (same rubric); returns self.

        Everything is validated first and nothing is applied if any part is wrong
        (``ValueError`` naming the field). The episodic memory is ``memory`` when given (a
        saved judge's index), else rebuilt in memory from the state's records with
        ``embedder`` (default: the one the state names, if it is the offline hashing one).
        """
        checked = validate_state(state)
        if checked.rubric != self.rubric.model_dump(mode="json"):
            raise ValueError("judge state: its rubric differs from this judge's rubric")
        if set(checked.dimensions) != set(self.judges):
            raise ValueError("judge state: its dimensions differ from the rubric's")
        staged = {}
        scoring = {}  # dim -> (policy, calibration), verified before anything is applied
        for dim, info in checked.dimensions.items():
            try:
                kept = [Guideline.from_dict(g) for g in info.guidelines]
                rejected = [Guideline.from_dict(g) for g in info.rejected]
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"judge state: dimensions.{dim}: a guideline is malformed "
                                 f"({exc})") from None
            probe = self.judges[dim]
            expected = probe.predict.signature.with_instructions(
                _instructions(probe.base_instructions, kept)).dump_state()
            if info.predictor.signature != expected:
                raise ValueError(f"judge state: predictor of {dim!r} differs from the rubric "
                                 "and guidelines saved beside it")
            # A state written before layouts existed has none: it gets today's default.
            layout = check_layout(info.extra.get("layout", DEFAULT_LAYOUT),
                                  where=f"judge state: field dimensions.{dim}.extra.layout")
            staged[dim] = (info, kept, rejected, layout)
            scoring[dim] = self._stage_scoring(dim, info)
        if memory is None and checked.episodic is not None:
            from judgealign.memory.embedders import embedder_from_identity
            from judgealign.memory.episodic import EpisodicMemory

            embedder = embedder or embedder_from_identity(checked.episodic.embedder,
                                                          where="judge state")
            memory = EpisodicMemory.from_state(
                {"episodes": [e.model_dump() for e in checked.episodic.episodes]}, embedder)
        for dim, (info, kept, rejected, layout) in staged.items():
            judge = self.judges[dim]
            judge.k, judge.demo_input_tokens = info.k, info.demo_input_tokens
            judge.layout = layout
            judge.item_tokens = info.item_tokens
            judge.set_guidelines(kept)
            judge.rejected = rejected
            judge.predict.demos = [dspy.Example(**d) for d in info.predictor.demos]
        for dim, (policy, calibration) in scoring.items():
            self.judges[dim].policy, self.judges[dim].calibration = policy, calibration
        self.mode = checked.mode or DEFAULT_MODE  # a state from before modes: per-dimension
        self.seen = dict(checked.seen)
        self.report = checked.report
        self.attach_memory(memory)
        return self

    def _stage_scoring(self, dim: str, info: Any) -> tuple[str, Calibration | None]:
        """A dimension's saved policy and verified calibration (``ValueError`` naming the
        field). A state written before policies existed scores as it did then: ``sampled``."""
        policy = info.policy or "sampled"
        if info.calibration is None:
            return policy, None
        spec = self.judges[dim].spec
        where = f"judge state: field dimensions.{dim}.calibration"
        return policy, Calibration.from_state(info.calibration,
                                              level_labels(self.rubric.scale, spec.allows_na),
                                              self.rubric.scale, where=where)

    @classmethod
    def from_saved(cls, saved: Any, *, embedder: Any = None, reindex: bool = False
                   ) -> RubricJudge:
        """A judge restored from a verified saved judge (:func:`artifacts.open_saved`),
        without an LM; its episodic memory queries the saved index read-only (``reindex``:
        re-embeds the records in memory instead, e.g. with another embedder)."""
        import warnings

        from judgealign.memory.episodic import EpisodicMemory
        from judgealign.memory.records import Episode
        from judgealign.signatures.rubric import rubric_from_dict

        where = str(saved.root / "program.json")
        try:
            checked = validate_state(saved.state, where=where)
            rubric = rubric_from_dict(checked.rubric, source=where)
        except Exception as exc:  # the saved state must not crash the loader
            raise ArtifactError(str(exc)) from None
        judge = cls(rubric)
        memory = None
        if checked.episodic is None and saved.read_episodes():
            # Never load a judge without the memory it was saved with, silently.
            raise ArtifactError(f"{where}: no episodic memory, but memory/episodes.jsonl holds "
                                "episodes; the files disagree -- re-save the judge")
        if checked.episodic is not None:
            if embedder is None:
                raise ArtifactError(f"{where}: an episodic memory needs an embedder")
            rows = saved.read_episodes()
            episodes = []
            for n, row in enumerate(rows, start=1):
                try:
                    e = validate_episode(row, where=f"{saved.root}/memory/episodes.jsonl, "
                                                    f"line {n}")
                except ValueError as exc:
                    raise ArtifactError(str(exc)) from None
                if e.dimension not in judge.judges:
                    raise ArtifactError(f"{saved.root}/memory/episodes.jsonl, line {n}: "
                                        f"unknown dimension {e.dimension!r}")
                episodes.append(Episode(e.item_id, e.dimension, dict(e.inputs), e.score,
                                        e.rationale))
            if checked.episodic.count is not None and checked.episodic.count != len(episodes):
                raise ArtifactError(f"{where}: {checked.episodic.count} episodes expected, "
                                    f"memory/episodes.jsonl holds {len(episodes)}")
            if reindex:
                memory, problem = EpisodicMemory(embedder), None
                memory.add(episodes)
            else:
                memory, problem = EpisodicMemory.open(
                    saved.memory_dir, embedder, episodes=episodes, trust_index=saved.index_ok)
            if problem:
                warnings.warn(f"{saved.root}: {problem}; rebuilt the index in memory from "
                              "memory/episodes.jsonl (the saved files are unchanged)",
                              UserWarning, stacklevel=3)
        state = dict(saved.state)
        state["episodic"] = None  # the memory comes from the index opened above
        try:
            judge.load_state(state, memory=memory)
        except ValueError as exc:
            raise ArtifactError(f"{where}: {exc}") from None
        judge.attach_memory(memory)
        judge.artifact_sha256 = saved.sha256
        return judge

    def save(self, path: Any, *, config: Any = None, **_: Any) -> Any:
        """Save as a self-contained judge directory, atomically (see
        :mod:`judgealign.artifacts`); ``config`` (Settings) is recorded without secrets."""
        from judgealign.artifacts import save_directory, write_json
        from judgealign.lm import lm_identity
        from judgealign.memory.episodic import EpisodicMemory

        if self.memory is not None and not isinstance(self.memory, EpisodicMemory):
            raise ArtifactError("this judge's demos were chosen by a DSPy few-shot baseline "
                                "for evaluation; only MemAlign judges can be saved")

        def write(root: Any) -> dict[str, Any]:
            state = self.dump_state()
            if state["episodic"] is not None:
                self.memory.save(root / "memory")
                state["episodic"] = {"embedder": state["episodic"]["embedder"],
                                     "episodes": [], "count": len(self.memory)}
            write_json(root / "program.json", state)
            lm = self.get_lm()
            return {"rubric": state["rubric"],
                    "lm": lm_identity(lm) if lm is not None else None,
                    "embedder": self.memory.embedder.identity() if self.memory else None,
                    "episodic": self.memory is not None, "report": state["report"]}

        public = config.public_dict() if config is not None else None
        return save_directory(path, write, settings=public)

    def _check_inputs(self, inputs: dict[str, Any]) -> dict[str, str]:
        known = set(self.rubric.input_names)
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise ItemError(f"unknown input field(s) {unknown} for rubric {self.rubric.name!r}; "
                            f"expected {sorted(known)}")
        out = {}
        for spec in self.rubric.inputs:
            value = inputs.get(spec.name)
            if value is None or (isinstance(value, str) and not value.strip()):
                if spec.required:
                    raise ItemError(f"missing required input field {spec.name!r}")
                value = ""
            out[spec.name] = str(value)
        return out

    def _check_dimensions(self, dimensions: Iterable[str] | None) -> list[str]:
        if dimensions is None:
            return self.dimensions
        return [self.rubric.dimension(d).id for d in dimensions]

    # --- MLflow (issue 16) ------------------------------------------------------------------

    def as_scorer(self, name: str | None = None, **kwargs: Any) -> Any:
        """This judge as an ``mlflow.genai`` scorer: one ``Feedback`` per dimension, named
        ``<name>/<dimension>`` (``name`` defaults to the rubric's). ``kwargs``
        (``inputs_map``, ``lm``, ``num_threads``) as :func:`judgealign.scorer.as_scorer`."""
        from judgealign.scorer import as_scorer

        return as_scorer(self, name, **kwargs)


def _forget(guidelines: Sequence[Guideline], gone: set[str]) -> list[Guideline]:
    """Guidelines with the forgotten sources removed; those left with none are dropped."""
    out = []
    for g in guidelines:
        sources = tuple(s for s in g.sources if s not in gone)
        if sources:
            out.append(g.with_sources(sources) if len(sources) != len(g.sources) else g)
    return out


def _instructions(base: str, guidelines: Sequence[Guideline]) -> str:
    block = render_guidelines(guidelines)
    return f"{base}\n\n{block}" if block else base


class _JudgingProgress:
    """``batch``'s progress bar: tqdm's count, rate and ETA, and the running cost of the
    calls made so far (LM calls, tokens, and dollars when litellm prices the model), read
    from a :class:`~judgealign.usage.CostMeter` around the batch. Disabled: does nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None
        self.meter: Any = None

    def __enter__(self) -> _JudgingProgress:
        if self.enabled:
            from tqdm.auto import tqdm

            from judgealign.usage import CostMeter

            self.meter = CostMeter().__enter__()
            self.bar = tqdm(total=self.total, desc="judging", unit="job", leave=False)
        return self

    def advance(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        self.bar.set_postfix_str(self.meter.running().describe(), refresh=False)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.meter.__exit__(*exc)


__all__ = ["NA", "DimensionJudge", "DimensionResult", "JudgeResult", "RubricJudge",
           "estimate_tokens"]
