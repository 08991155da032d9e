"""Joint mode (``[scoring] mode = "joint"``): one LM call per item scores every dimension.

Per-dimension judging makes one call per dimension; even with the item-first layout (the
item's KV state or a provider's prompt cache shared by the calls) each call pays for its
own answer and its own dimension part. In joint mode one call carries:

* a system message that depends on the rubric only: the item-first layout's rubric text
  (:class:`~judgealign.adapter.JudgeAdapter`), then one section per dimension (its
  instructions) and the output fields. Consecutive joint calls share it token for token, so
  llama.cpp evaluates it once per run, not once per item (its KV state is reused as the
  common prefix), and a provider's prompt cache serves it;
* the fenced item and the acknowledgement, as in the item-first layout. Up to here nothing
  depends on what alignment learned, so the unaligned and the aligned judge, every fold of a
  cross-validation and every re-alignment share this prefix: the embedded engine keeps its
  KV state per item (:class:`~judgealign.local_states.PrefixStates`) and reads each item once per
  run, and a provider's prompt cache serves it across them;
* each dimension's kept guidelines and the labels of the item's nearest episodes as compact
  lines (``score 2: <the expert's rationale>``: the episodic memory's demos without their
  item text, which would not fit nine times), then the question;
* an answer with every ``<dimension>_score``, then every ``<dimension>_rationale`` (the
  signature of :func:`joint_signature`; scores are typed levels, so a constraining engine
  writes nothing else and reports each score's level probabilities). With the scores first,
  calibration asks for them alone (same prompt, same scores; the embedded model writes no
  rationale, most of a joint call's generated tokens).

A dimension whose field is missing or off the scale fails alone (its ``DimensionResult``
records the error); the others keep their scores. A retry asks again for the failed
dimensions only. Score policies and calibrations apply per dimension as in per-dimension
mode, and MemAlign fits the calibrations on joint judgments of the training items
(:class:`JointView`), so what cross-validation measures is what the aligned judge ships.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, get_args

import dspy

from judgealign.adapter import JudgeAdapter, neutralize
from judgealign.calibration import logprob_request
from judgealign.items import clip, fit_fields
from judgealign.lm import (
    is_answer_error,
    lm_context_window,
    lm_token_counter,
    own_context_window,
    retry_config,
)
from judgealign.memory.semantic import guideline_lines
from judgealign.results import DimensionResult, JudgeResult
from judgealign.signatures.rubric import (
    ANSWER_LINE,
    ONE_DIMENSION,
    input_fields,
    parse_score,
    score_choices,
)

log = logging.getLogger(__name__)

Mode = Literal["per-dimension", "joint"]
MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "per-dimension"

# Answer tokens per dimension: the score field and a one-sentence rationale. The embedded
# model's per-call budget is 32; a remote model's 512 would reserve 4,608 tokens for nine.
ANSWER_TOKENS_PER_DIMENSION = 64
# Tokens of one compact demo line's rationale: its first ~18 words, cut at a word with "…"
# (items.clip). Nine dimensions with k=3 make 27 lines; at 60 tokens (the bundled notebooks'
# rationales average 57) they were 1,700 of a 6,100-token prompt, read again for every item
# after it; cut to 32 tokens with truncate's 15-token marker, they kept 17 tokens of text.
DEMO_LINE_TOKENS = 24
# The shared part's scaffolding, the question and the output-format text.
_FIXED_OVERHEAD_TOKENS = 500
_MIN_ITEM_TOKENS = 256
MISSING = "<missing from the answer>"


def check_mode(mode: Any, *, where: str = "mode") -> Mode:
    """``mode`` if it names a judging mode, else ``ValueError`` naming ``where``."""
    if mode not in MODES:
        raise ValueError(f"{where}: unknown judging mode {mode!r}; known: {', '.join(MODES)}")
    return mode


def score_field(dim: str) -> str:
    return f"{dim}_score"


def rationale_field(dim: str) -> str:
    return f"{dim}_rationale"


def joint_signature(rubric: Any, dims: Sequence[str]) -> type[dspy.Signature]:
    """The signature of a joint call: the rubric's inputs, then ``<dim>_score`` for each
    dimension of ``dims`` (in order; a ``Literal`` of its levels, N/A where allowed), then
    ``<dim>_rationale`` for each (``str``).

    Every score comes before every rationale, so a cut answer keeps the scores, and the
    scores, with their level probabilities, do not depend on anything written after them:
    the answer's first part is the same whether the rationales follow or not, which is what
    lets calibration ask for the scores alone (:func:`judge_jointly`'s ``scores_only``)."""
    fields = input_fields(rubric)
    for dim in dims:
        spec = rubric.dimension(dim)
        choices = score_choices(rubric, spec)
        fields[score_field(dim)] = (Literal[choices], dspy.OutputField(  # type: ignore[valid-type]
            desc=f"{spec.name}: one of {', '.join(choices)}"))
    for dim in dims:
        fields[rationale_field(dim)] = (str, dspy.OutputField(
            desc=f"{rubric.dimension(dim).name}: one short sentence citing the evidence"))
    return dspy.make_signature(fields, "Judge the item on every dimension listed.",
                               signature_name="JointJudgment")


class JointAdapter(JudgeAdapter):
    """The layout of a joint call (see the module docstring): four messages, of which only
    the last two depend on the item's retrieved demos and the second on the item.

    ``sections`` maps each judged dimension to its instructions (without guidelines);
    ``guidelines`` to its guideline lines (``- <text>`` each; missing or empty: none); ``demos``
    passed to :meth:`format` are dicts with ``dimension``, ``score`` and ``rationale``.
    Parsing is lenient per field: a missing or malformed field comes back as ``None`` or as
    written, and the caller fails that dimension alone.
    """

    scope = "You will be asked to judge the item on several dimensions at once."

    def __init__(self, rubric: Any, sections: Mapping[str, str], *,
                 guidelines: Mapping[str, str] | None = None, scores_only: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(rubric, **kwargs)
        self.sections = dict(sections)
        self.guidelines = {d: g for d, g in (guidelines or {}).items() if g}
        self.scores_only = scores_only

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any],
                                 signature: type[dspy.Signature]) -> None:
        """DSPy's structured-output request, for the score fields alone with ``scores_only``.
        The prompt is the full joint prompt either way (``format`` gets the whole signature),
        so the scores, written first, see the same text as in a full answer; an engine that
        follows the schema stops after them (the embedded one writes no rationale) and the
        rationales come back as :data:`MISSING`."""
        if self.scores_only:
            for dim in self.sections:
                signature = signature.delete(rationale_field(dim))
        super()._prepare_response_format(lm, lm_kwargs, signature)

    def format(self, signature: type[dspy.Signature], demos: list[dict[str, Any]],
               inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return [*self.shared_messages(signature, inputs),
                {"role": "user", "content": self.joint_message(demos)}]

    def system_message(self, signature: type[dspy.Signature]) -> str:
        """The per-dimension shared system text, then every dimension's section and the
        output fields: nothing that depends on the item, so consecutive joint calls of one
        judge share it token for token (llama.cpp keeps its KV state; a provider's prompt
        cache sees a long repeated prefix) and each item pays only for itself."""
        parts = [super().system_message(signature),
                 "The rubric's dimensions, each judged independently:"]
        for n, (dim, text) in enumerate(self.sections.items(), start=1):
            parts.append(f"## Dimension {n}: answer in `{score_field(dim)}` and "
                         f"`{rationale_field(dim)}`\n{self._section(text)}")
        parts.append("Output fields:\n" + _field_lines(signature))
        return "\n\n".join(parts)

    def joint_message(self, demos: Sequence[Mapping[str, Any]]) -> str:
        """Per dimension its guidelines and the nearest episodes' labels (compact lines),
        then the question: everything alignment learned comes after the item."""
        by_dim: dict[str, list[Mapping[str, Any]]] = {}
        for demo in demos:
            by_dim.setdefault(str(demo.get("dimension")), []).append(demo)
        # Short headings: this message is read again for every item (nine dimensions' long
        # headings were ~400 tokens of a ~2,100-token message on the embedded model).
        parts = []
        for n, dim in enumerate(self.sections, start=1):
            shown = by_dim.get(dim, [])
            if dim not in self.guidelines and not shown:
                continue
            lines = [f"Dimension {n} ({self._name(dim)}):"]
            if dim in self.guidelines:
                lines += ["Guidelines learned from the experts (apply them):",
                          self.guidelines[dim]]
            if shown:
                lines.append("The experts' scores of similar items (other items, not this one):")
                lines += [f"- score {d.get('score')}: {neutralize(str(d.get('rationale')))}"
                          for d in shown]
            parts.append("\n".join(lines))
        parts.append("Judge the item between the ITEM markers above on each of the "
                     f"{len(self.sections)} dimensions of the rubric, independently: first "
                     "every dimension's score, then for each a rationale of one short sentence "
                     "(at most 15 words) citing the evidence. Respond with the JSON object only, "
                     "its fields in the order listed in the output fields.")
        return "\n\n".join(parts)

    def _name(self, dim: str) -> str:
        try:
            return str(self.rubric.dimension(dim).name)
        except (AttributeError, KeyError, ValueError):
            return dim

    def _section(self, text: str) -> str:
        """A dimension's instructions (and guidelines) without what the shared part or the
        joint question already say: the rubric header, "judge one dimension only", the
        per-dimension answer format."""
        text = self._without_header(text)
        if text.startswith(ONE_DIMENSION):
            text = text[len(ONE_DIMENSION):]
        return "\n".join(line for line in text.split("\n") if line.strip() != ANSWER_LINE)

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        from dspy.utils.exceptions import AdapterParseError

        fields = _json_object(completion)
        if fields is None:
            raise AdapterParseError(adapter_name=type(self).__name__, signature=signature,
                                    lm_response=completion,
                                    message="the answer holds no JSON object")
        # A missing field is marked, not None: None would read as N/A.
        return {name: fields.get(name, MISSING) for name in signature.output_fields}


def _field_lines(signature: type[dspy.Signature]) -> str:
    lines = []
    for name, info in signature.output_fields.items():
        desc = (info.json_schema_extra or {}).get("desc") or name
        lines.append(f"- {name}: {desc}")
    return "\n".join(lines)


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text``, repaired as DSPy's JSONAdapter does, or ``None``."""
    import json_repair
    import regex

    try:
        fields = json_repair.loads(text)
        if not isinstance(fields, dict):
            match = regex.search(r"\{(?:[^{}]|(?R))*\}", text, regex.DOTALL)
            fields = json_repair.loads(match.group(0)) if match else None
    except (ValueError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None


# --- judging --------------------------------------------------------------------------------


def judge_jointly(judge: Any, inputs: Mapping[str, str], dims: Sequence[str], *,
                  vector: Any = None, exclude: Collection[str] = frozenset(),
                  collect: bool = False, item_id: str | None = None,
                  scores_only: bool = False) -> JudgeResult:
    """One item judged on ``dims`` with one call (plus a retry for failed dimensions).

    ``inputs`` are checked inputs; ``vector`` the item's retrieval vector; ``exclude`` and
    ``collect`` as in :meth:`DimensionJudge.forward`. Every ``DimensionResult`` says what it
    says in per-dimension mode (scores by each dimension's policy and calibration).
    ``scores_only``: the same prompt, but the answer asked for holds the scores alone (empty
    rationales): what calibration needs, since the scores come first and see the same text
    as in a full answer; the embedded model then writes no rationale at all.
    """
    if not dims:
        return JudgeResult(item_id, {})
    djudges = [judge.judges[d] for d in dims]
    lm = djudges[0].resolve_lm()
    count = lm_token_counter(lm)
    demos: list[dict[str, Any]] = []
    retrieved: dict[str, list[str]] = {}
    neighbours: dict[str, dict[str, float]] = {}
    for dj in djudges:
        found, episodes, sims = dj._demos(inputs, count, vector, exclude)
        retrieved[dj.dimension] = [ep.item_id for ep in episodes]
        neighbours[dj.dimension] = (dj._neighbours(episodes, sims, vector)
                                    if collect or dj._uses_neighbours() else {})
        for d in found:
            demos.append({"dimension": dj.dimension, "score": d.get("score"),
                          "rationale": clip(str(d.get("rationale") or ""),
                                            DEMO_LINE_TOKENS, count)})
    sections = {dj.dimension: dj.base_instructions for dj in djudges}
    guidelines = {dj.dimension: guideline_lines(dj.guidelines) for dj in djudges}
    base_max = int((getattr(lm, "kwargs", {}) or {}).get("max_tokens") or 256)
    max_out = min(base_max, ANSWER_TOKENS_PER_DIMENSION) * len(dims) + 16
    section_tokens = sum(count(t) for t in [*sections.values(), *guidelines.values()] if t)
    room = (lm_context_window(lm) - max_out - _FIXED_OVERHEAD_TOKENS - section_tokens
            - DEMO_LINE_TOKENS * len(demos))
    # A window the LM states itself (not litellm's default for a model it does not list,
    # which may well be larger) that leaves no room for the item: sent anyway, the call fails
    # with the engine's bare "exceed context window"; say why (a rubric of many dimensions,
    # each with its guidelines, on a small-context model).
    if room < _MIN_ITEM_TOKENS and own_context_window(lm) is not None:
        why = (f"ContextWindowError: the joint prompt's rubric sections and guidelines "
               f"({section_tokens} tokens), demo lines and answer "
               f"leave {max(room, 0)} of the LM's {lm_context_window(lm)}-token context for "
               f"the item (at least {_MIN_ITEM_TOKENS} needed): lower [memory] max_guidelines "
               "or k, judge fewer dimensions per call, or use mode = \"per-dimension\"")
        return JudgeResult(item_id, {d: DimensionResult(d, None, "", retrieved[d], error=why)
                                     for d in dims})
    budgets = [dj.item_tokens for dj in djudges if dj.item_tokens is not None]
    budget = max(room, _MIN_ITEM_TOKENS)
    if budgets:
        budget = min(budget, min(budgets))
    fitted = fit_fields(dict(inputs), budget, count)

    results: dict[str, DimensionResult] = {}
    errors: dict[str, str] = {}
    raw: str | None = None
    pending = list(dims)
    attempts = max(dj.max_attempts for dj in djudges)
    ask = logprob_request(lm)
    for attempt in range(attempts):
        signature = joint_signature(judge.rubric, pending)
        predict = dspy.Predict(signature)
        adapter = JointAdapter(judge.rubric, {d: sections[d] for d in pending},
                               guidelines=guidelines, scores_only=scores_only)
        config = {**retry_config(lm, attempt), **ask, "max_tokens": max_out}
        try:
            with dspy.context(lm=lm, adapter=adapter):
                pred = predict(**fitted, demos=[d for d in demos if d["dimension"] in pending],
                               config=config)
        except Exception as exc:  # the call itself failed: every pending dimension did
            msg = f"{type(exc).__name__}: {exc}"
            raw = getattr(exc, "lm_response", None) or raw
            errors.update(dict.fromkeys(pending, msg))
            log.debug("joint judgment failed: %s", msg)
            if ask and not is_answer_error(exc):
                ask = {}  # a provider that lists logprobs but refuses them: ask no more
            continue
        still = []
        for dim in pending:
            dj = judge.judges[dim]
            try:
                value = pred.get(score_field(dim))
                if value == MISSING:
                    raise ValueError(f"the answer has no {score_field(dim)!r}")
                score = parse_score(value, scale=judge.rubric.scale,
                                    allow_na=dj.spec.allows_na)
            except ValueError as exc:
                errors[dim] = f"ValueError: {exc}"
                still.append(dim)
                continue
            why = pred.get(rationale_field(dim))
            results[dim] = dj._result(pred, score, retrieved[dim], neighbours[dim],
                                      field=score_field(dim),
                                      rationale="" if why == MISSING else why)
        raw = json.dumps({k: pred.get(k) for k in signature.output_fields}, default=str)
        pending = still
        if not pending:
            break
    for dim in pending:
        results[dim] = DimensionResult(dim, None, "", retrieved[dim],
                                       error=errors.get(dim, "no answer")[:2000], raw=raw)
    return JudgeResult(item_id, {d: results[d] for d in dims})


class JointMemo:
    """Joint judgments of training items by key, each computed once even when several
    threads (the views of different dimensions, or identical-input twins, whose key is the
    same) ask for it at the same time."""

    def __init__(self) -> None:
        self._results: dict[Any, JudgeResult] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Any, compute: Callable[[], JudgeResult]) -> JudgeResult:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._results:
                self._results[key] = compute()
            return self._results[key]


class JointView:
    """Dimension ``dim`` of a joint judge of ``dims``, callable like a ``DimensionJudge`` (what
    :func:`judgealign.calibration.training_rows` calls). Judgments are memoised per item
    inputs and exclusion set in ``memo``, shared by the views of all dimensions, so fitting
    nine calibrations judges each training item (and its identical-input twins, which have
    the same exclusion set) once, not nine times."""

    def __init__(self, judge: Any, dim: str, dims: Sequence[str], memo: JointMemo) -> None:
        self.judge, self.dim, self.dims, self.memo = judge, dim, list(dims), memo
        self.rubric = judge.rubric
        self.spec = judge.judges[dim].spec

    def __call__(self, *, _exclude: Collection[str] = frozenset(), _collect: bool = False,
                 **inputs: str) -> DimensionResult:
        from judgealign.calibration import input_group

        def compute() -> JudgeResult:
            vector = self.judge._query_vectors([inputs], self.dims)[0]
            # Calibration reads the level probabilities, not the rationales: scores only.
            return judge_jointly(self.judge, inputs, self.dims, vector=vector,
                                 exclude=_exclude, collect=True, scores_only=True)

        return self.memo.get((input_group(inputs), frozenset(_exclude)), compute)[self.dim]


__all__ = ["DEFAULT_MODE", "MODES", "JointAdapter", "JointMemo", "JointView", "Mode",
           "check_mode", "joint_signature", "judge_jointly", "rationale_field", "score_field"]
