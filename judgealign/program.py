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
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy

from judgealign.errors import ItemError
from judgealign.items import TokenCounter, estimate_tokens, truncate
from judgealign.lm import lm_context_window, lm_is_parallel_safe, lm_token_counter
from judgealign.memory.semantic import Guideline, render_guidelines
from judgealign.signatures.rubric import (
    NA,
    Rubric,
    build_signature,
    format_score,
    instructions_for,
    parse_score,
)

log = logging.getLogger(__name__)

# Adapter instructions, field headers and the answer itself, beyond what we count ourselves.
_PROMPT_OVERHEAD_TOKENS = 350
_MIN_ITEM_TOKENS = 256


@dataclass
class DimensionResult:
    """One dimension's verdict on one item.

    ``score`` is a level or ``None`` for N/A; when ``error`` is set the judge failed (after
    retries) and ``score`` is ``None`` too, with the LM's raw answer in ``raw``.
    """

    dimension: str
    score: int | None
    rationale: str = ""
    retrieved_ids: list[str] = field(default_factory=list)
    error: str | None = None
    raw: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def label(self) -> str:
        return "FAILED" if self.failed else format_score(self.score)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class JudgeResult:
    """All dimensions' verdicts on one item, keyed by dimension id (in rubric order)."""

    item_id: str | None
    dimensions: dict[str, DimensionResult]

    def __getitem__(self, dimension: str) -> DimensionResult:
        return self.dimensions[dimension]

    def __iter__(self):
        return iter(self.dimensions.values())

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id,
                "dimensions": {k: v.to_dict() for k, v in self.dimensions.items()}}


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
    """

    def __init__(self, rubric: Rubric, dimension: str, *, k: int = 3,
                 demo_input_tokens: int = 350, item_tokens: int | None = None,
                 max_attempts: int = 2) -> None:
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

    # --- semantic memory ------------------------------------------------------------------

    def set_guidelines(self, guidelines: Sequence[Guideline]) -> None:
        """Replace the guidelines and re-render the predictor's instructions from them."""
        self.guidelines = list(guidelines)
        self.predict.signature = self.predict.signature.with_instructions(self.instructions)

    @property
    def instructions(self) -> str:
        block = render_guidelines(self.guidelines)
        return f"{self.base_instructions}\n\n{block}" if block else self.base_instructions

    # --- judging --------------------------------------------------------------------------

    def forward(self, **inputs: str) -> DimensionResult:
        lm = dspy.settings.lm if self.predict.lm is None else self.predict.lm
        if lm is None:
            raise RuntimeError("no LM configured: pass lm= to the judge or call dspy.configure")
        count = lm_token_counter(lm)
        demos, retrieved = self._demos(inputs, count)
        inputs, demos = self._fit(inputs, demos, lm, count)
        last_error, raw = "", None
        for _attempt in range(self.max_attempts):
            try:
                with dspy.context(adapter=dspy.JSONAdapter()):
                    pred = self.predict(**inputs, demos=demos)
                score = parse_score(pred.score, scale=self.rubric.scale,
                                    allow_na=self.spec.allows_na)
                return DimensionResult(self.dimension, score, str(pred.rationale or "").strip(),
                                       retrieved)
            except Exception as exc:  # one dimension's failure must never sink the batch
                last_error = f"{type(exc).__name__}: {exc}"
                raw = getattr(exc, "lm_response", None) or raw
                log.debug("dimension %s failed: %s", self.dimension, last_error)
        return DimensionResult(self.dimension, None, "", retrieved, error=last_error[:2000],
                               raw=raw)

    def _demos(self, inputs: Mapping[str, str], count: TokenCounter
               ) -> tuple[list[dspy.Example], list[str]]:
        if self.memory is None or self.k <= 0:
            # Demos a DSPy optimizer stored on the predictor still apply, under the same
            # per-demo token budget as retrieved ones (whole notebooks would crowd out the item).
            names = self.rubric.input_names
            return [d.copy(**{n: truncate(str(d[n]), self.demo_input_tokens, count)
                              for n in names if d.get(n) is not None})
                    for d in self.predict.demos], []
        episodes = self.memory.retrieve(inputs, dimension=self.dimension, k=self.k)
        demos = []
        for ep in episodes:
            fields = {name: truncate(ep.inputs.get(name, ""), self.demo_input_tokens, count)
                      for name in self.rubric.input_names}
            demos.append(dspy.Example(**fields, score=format_score(ep.score),
                                      rationale=ep.rationale or "(no rationale given)"))
        return demos, [ep.item_id for ep in episodes]

    def _fit(self, inputs: Mapping[str, str], demos: list[dspy.Example], lm: Any,
             count: TokenCounter) -> tuple[dict[str, str], list[dspy.Example]]:
        """Fit item + instructions + demos into the LM's context, dropping demos last-first."""
        window = lm_context_window(lm)
        max_out = int((getattr(lm, "kwargs", {}) or {}).get("max_tokens") or 256)
        room = window - max_out - _PROMPT_OVERHEAD_TOKENS - count(self.instructions)
        demo_cost = [sum(count(str(v)) for v in d.toDict().values()) + 20 for d in demos]
        while demos and room - sum(demo_cost) < _MIN_ITEM_TOKENS:
            demos, demo_cost = demos[:-1], demo_cost[:-1]
        budget = room - sum(demo_cost)
        if self.item_tokens is not None:
            budget = min(budget, self.item_tokens)
        return _fit_fields(dict(inputs), budget, count), demos


def _fit_fields(inputs: dict[str, str], budget: int, count: TokenCounter) -> dict[str, str]:
    """Give short fields what they need and the longest field the rest of ``budget``."""
    if not inputs:
        return inputs
    order = sorted(inputs, key=lambda name: count(inputs[name]))
    fitted: dict[str, str] = {}
    for i, name in enumerate(order):
        share = max(budget // (len(order) - i), 32)
        fitted[name] = truncate(inputs[name], share, count)
        budget -= count(fitted[name])
    return {name: fitted[name] for name in inputs}


class RubricJudge(dspy.Module):
    """A judge of every dimension of a rubric.

    Call it with the rubric's inputs (``judge(notebook=text, task=prompt)``) to get a
    :class:`JudgeResult`; :meth:`batch` judges many items. ``lm`` fixes the LM of every
    dimension; otherwise DSPy's configured LM is used.
    """

    def __init__(self, rubric: Rubric, *, lm: Any = None, k: int = 3,
                 demo_input_tokens: int = 350, item_tokens: int | None = None) -> None:
        super().__init__()
        self.rubric = rubric
        self.judges = {d.id: DimensionJudge(rubric, d.id, k=k, demo_input_tokens=demo_input_tokens,
                                            item_tokens=item_tokens)
                       for d in rubric.dimensions}
        # dspy discovers sub-modules through attributes, not dict values.
        for dim_id, judge in self.judges.items():
            setattr(self, f"dim_{dim_id}", judge)
        self.memory: Any = None
        self.seen: dict[str, str] = {}  # episode id -> content hash, for incremental alignment
        self.report: Any = None
        if lm is not None:
            self.set_lm(lm)

    @classmethod
    def from_settings(cls, rubric: Rubric, settings: Any, *, lm: Any = None) -> RubricJudge:
        """A fresh judge with the memory budgets of ``settings`` and its LM (or ``lm``)."""
        from judgealign.lm import build_lm

        mem = settings.memory
        return cls(rubric, lm=lm if lm is not None else build_lm(settings.lm), k=mem.k,
                   demo_input_tokens=mem.demo_input_tokens, item_tokens=mem.item_tokens)

    @property
    def dimensions(self) -> list[str]:
        return list(self.judges)

    def attach_memory(self, memory: Any) -> None:
        """Share one episodic memory between all dimensions (``None`` detaches it)."""
        self.memory = memory
        for judge in self.judges.values():
            judge.memory = memory

    def forward(self, *, item_id: str | None = None, dimensions: Iterable[str] | None = None,
                **inputs: str) -> JudgeResult:
        inputs = self._check_inputs(inputs)
        wanted = self._check_dimensions(dimensions)
        return JudgeResult(item_id, {d: self.judges[d](**inputs) for d in wanted})

    def batch(self, items: Sequence[Mapping[str, str]], *, item_ids: Sequence[str] | None = None,
              dimensions: Iterable[str] | None = None, num_threads: int | None = None,
              progress: bool = False) -> list[JudgeResult]:
        """Judge many items; results come back in input order.

        Remote LMs are called from ``num_threads`` threads (default 8); an in-process model
        that is not thread-safe is called in sequence whatever ``num_threads`` says.
        """
        ids = list(item_ids) if item_ids is not None else [None] * len(items)
        if len(ids) != len(items):
            raise ValueError(f"{len(items)} items but {len(ids)} item_ids")
        wanted = self._check_dimensions(dimensions)
        lm = self.get_lm() or dspy.settings.lm
        threads = 1 if not lm_is_parallel_safe(lm) else (num_threads or 8)
        # Dimension-major order: consecutive calls share the instructions, so a local model
        # reuses its cached prompt prefix.
        jobs = [(i, d) for d in wanted for i in range(len(items))]
        checked = [self._check_inputs(dict(item)) for item in items]
        bar = _progress(len(jobs), "judging", progress)
        settings = dspy.settings.config.copy()

        def run(job: tuple[int, str]) -> DimensionResult:
            i, dim = job
            with dspy.context(**{k: v for k, v in settings.items() if k in ("lm", "adapter")}):
                result = self.judges[dim](**checked[i])
            bar.update(1)
            return result

        if threads == 1:
            done = [run(job) for job in jobs]
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                done = list(pool.map(run, jobs))
        bar.close()
        out = [JudgeResult(ids[i], {}) for i in range(len(items))]
        for (i, dim), result in zip(jobs, done, strict=True):
            out[i].dimensions[dim] = result
        return out

    def unalign(self, item_ids: Iterable[str]) -> RubricJudge:
        """A copy that has forgotten these items: their episodes, and every guideline all of
        whose sources are gone. Guidelines with a surviving source stay; nothing is
        re-distilled."""
        gone = set(item_ids)
        new = self.deepcopy()
        if new.memory is not None:
            new.memory.remove(gone)
        for judge in new.judges.values():
            kept = []
            for g in judge.guidelines:
                sources = tuple(s for s in g.sources if s not in gone)
                if sources:
                    kept.append(g.with_sources(sources))
            judge.set_guidelines(kept)
        new.seen = {k: v for k, v in new.seen.items() if k.split("::", 1)[0] not in gone}
        return new

    def deepcopy(self) -> RubricJudge:
        """A copy with its own memories that shares the LM objects (model handles are big)."""
        memo = {id(j.predict.lm): j.predict.lm for j in self.judges.values()
                if j.predict.lm is not None}
        return copy.deepcopy(self, memo)

    def save(self, path: Any, *, config: Any = None, **_: Any) -> Any:
        """Save as a self-contained judge directory (see :mod:`judgealign.artifacts`)."""
        from judgealign.artifacts import save

        return save(self, path, config=config)

    def get_lm(self) -> Any:
        """The LM every dimension uses (``None``: DSPy's configured LM)."""
        lms = {id(j.predict.lm): j.predict.lm for j in self.judges.values()}
        return next(iter(lms.values())) if len(lms) == 1 else None

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


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="call", leave=False)


__all__ = ["NA", "DimensionJudge", "DimensionResult", "JudgeResult", "RubricJudge",
           "estimate_tokens"]
