"""DSPy few-shot optimizers as baselines for MemAlign: same judge, same LM, same ``k``.

Each baseline turns a dimension's training episodes (``labels.episodes(dim)``: the item's
inputs, the aggregated expert score, the rationales) into ``dspy.Example``s, lets a DSPy
optimizer choose the demos, and returns an aligned copy of the judge that shows them:

* ``labeled-fewshot`` -- :class:`dspy.LabeledFewShot`: ``k`` random training examples
  (the training set is shuffled with ``seed`` first, since LabeledFewShot always samples
  with ``random.Random(0)``).
* ``knn-fewshot`` -- :class:`dspy.KNNFewShot`'s retriever: the ``k`` training examples
  nearest to the judged item, embedded with judgealign's embedder. No guidelines.
* ``bootstrap-fewshot`` -- :class:`dspy.BootstrapFewShot` with the metric "the judge's score
  equals the expert's": up to ``k`` demos whose score the judge itself reproduced (with its
  own rationale), topped up with labelled examples to ``k``. The teacher is the unaligned
  judge showing ``k`` labelled demos (DSPy puts them on the teacher's predictor; each demo's
  item text is cut to ``demo_input_tokens`` like every other demo), so these are the
  training items the judge gets right with a few examples.

Why the demos are served through the judge's memory interface and not ``predict.demos``:
:class:`~judgealign.program.DimensionJudge` passes ``demos=`` to its predictor on every
call (so concurrent calls never share state), which overrides ``predict.demos``. The demos
DSPy chose are therefore handed back as :class:`Episode`s by a :class:`DemoSet` attached like
an episodic memory, and the judge truncates each demo's item text to ``demo_input_tokens``
with the LM's own token counter -- the very code path MemAlign's demos take, so the
comparison is fair by construction (same ``k``, same budget, same LM).

``KNNFewShot.compile`` would re-run ``BootstrapFewShot`` (and copy the module) on every call;
with no bootstrapped demos that only shuffles the neighbours, so its ``KNN`` retriever is
used directly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy
from dspy.teleprompt.teleprompt import Teleprompter

from judgealign.errors import JudgeAlignError
from judgealign.memory.embedders import Embedder, HashingEmbedder
from judgealign.memory.records import Episode
from judgealign.optimizers.memalign import CostMeter, _as_labelset
from judgealign.program import DimensionJudge, DimensionResult, RubricJudge
from judgealign.signatures.rubric import format_score, parse_score

log = logging.getLogger(__name__)

FEWSHOT_BASELINES = ("labeled-fewshot", "knn-fewshot", "bootstrap-fewshot")
UNSUPPORTED_BASELINES = {
    "mipro": "dspy.MIPROv2",
    "simba": "dspy.SIMBA",
    "gepa": "dspy.GEPA",
}


class UnsupportedBaseline(JudgeAlignError):
    """A baseline judgealign cannot run yet; the message says why."""


def unsupported_reason(name: str) -> str:
    """Why ``mipro``/``simba``/``gepa`` are not run (recorded as skipped in CV results)."""
    optimizer = UNSUPPORTED_BASELINES.get(name, name)
    return (f"{optimizer} is not a cv variant yet: it rewrites instructions and demos through "
            "many scored trial runs of the judge and needs a validation split inside each "
            "training fold. Its alignment cost is measured by `python -m "
            "benchmarks.optimizer_cost` (on 12 training notebooks: MIPROv2 light 120-122 LM "
            "calls per dimension, SIMBA 76, GEPA 40, against MemAlign's 1)")


# --- serving the chosen demos ----------------------------------------------------------------


class DemoSet:
    """Demos chosen by a DSPy optimizer, served with :class:`EpisodicMemory`'s interface.

    Parameters
    ----------
    fixed
        Dimension -> the demos shown on every call (``labeled-fewshot``,
        ``bootstrap-fewshot``), in the optimizer's order.
    retrievers
        Dimension -> ``(knn, episodes_by_item)``: a ``dspy.KNN`` over the dimension's training
        examples and the episode behind each example's ``item_id`` (``knn-fewshot``).
    input_names
        The rubric's inputs, in the order the KNN examples were built with.

    A judge holding a DemoSet is for evaluation: ``judgealign.artifacts`` saves episodic
    memories only.
    """

    def __init__(self, *, fixed: Mapping[str, Sequence[Episode]] | None = None,
                 retrievers: Mapping[str, tuple[Any, Mapping[str, Episode]]] | None = None,
                 input_names: Sequence[str] = ()) -> None:
        self.fixed = {d: list(eps) for d, eps in (fixed or {}).items()}
        self.retrievers = dict(retrievers or {})
        self.input_names = list(input_names)

    def retrieve(self, inputs: Mapping[str, str], *, dimension: str, k: int,
                 vector: Any = None) -> list[Episode]:
        """The demos of ``dimension`` for this item: fixed ones, or the ``k`` nearest
        (``vector`` is ignored: dspy.KNN embeds with its own vectorizer)."""
        if k <= 0:
            return []
        if dimension in self.retrievers:
            knn, by_item = self.retrievers[dimension]
            # Same field order as the training examples, so both sides embed alike.
            found = knn(**{name: str(inputs.get(name, "")) for name in self.input_names})
            return [by_item[ex.item_id] for ex in found][:k]
        return self.fixed.get(dimension, [])[:k]

    def episodes(self, dimension: str | None = None) -> list[Episode]:
        """Every episode this set can show (for KNN: the whole training set)."""
        out = [e for d, eps in self.fixed.items() for e in eps
               if dimension is None or d == dimension]
        for d, (_, by_item) in self.retrievers.items():
            if dimension is None or d == dimension:
                out += list(by_item.values())
        return sorted(out, key=lambda e: e.id)

    def item_ids(self) -> set[str]:
        return {e.item_id for e in self.episodes()}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.episodes():
            out[e.dimension] = out.get(e.dimension, 0) + 1
        return dict(sorted(out.items()))

    def __len__(self) -> int:
        return len(self.episodes())

    def remove(self, item_ids: Iterable[str]) -> int:
        """Forget these items' demos (``RubricJudge.unalign``); KNN indexes are rebuilt."""
        gone = set(item_ids)
        before = len(self)
        self.fixed = {d: [e for e in eps if e.item_id not in gone]
                      for d, eps in self.fixed.items()}
        for d, (knn, by_item) in list(self.retrievers.items()):
            kept = {i: e for i, e in by_item.items() if i not in gone}
            examples = [ex for ex in knn.trainset if ex.item_id not in gone]
            self.retrievers[d] = (_knn(knn.k, examples, self.input_names, knn.embedding), kept)
        return before - len(self)

    def close(self) -> None:
        pass

    def __deepcopy__(self, memo: dict[int, Any]) -> DemoSet:
        # The retrievers are read-only after construction: copies may share them.
        return DemoSet(fixed=self.fixed, retrievers=self.retrievers,
                       input_names=self.input_names)


# --- the optimizer -----------------------------------------------------------------------------


@dataclass
class BaselineReport:
    """Cost and outcome of one baseline ``compile`` (mirrors MemAlign's ``CompileReport``)."""

    optimizer: str
    settings: dict[str, Any]
    demos: dict[str, list[str]] = field(default_factory=dict)  # dimension -> demo item ids
    lm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        return data


class FewShotBaseline(Teleprompter):
    """A DSPy few-shot optimizer applied to every dimension of a :class:`RubricJudge`.

    Parameters
    ----------
    method
        ``"labeled-fewshot"``, ``"knn-fewshot"`` or ``"bootstrap-fewshot"``.
    lm
        The judge LM (bootstrap-fewshot runs the judge with it). Default: the student's LM,
        else DSPy's configured LM.
    k
        Demos per judgment. Default 3, as MemAlign's.
    demo_input_tokens
        Token budget of each demo's item text. Default 350, as MemAlign's.
    embedder
        Embeds items for ``knn-fewshot``. Default :class:`HashingEmbedder`.
    seed
        Shuffles each dimension's training examples before the optimizer sees them.
    """

    def __init__(self, method: str, *, lm: Any = None, k: int = 3, demo_input_tokens: int = 350,
                 embedder: Embedder | None = None, seed: int = 0) -> None:
        super().__init__()
        if method in UNSUPPORTED_BASELINES:
            raise UnsupportedBaseline(unsupported_reason(method))
        if method not in FEWSHOT_BASELINES:
            raise ValueError(f"unknown baseline {method!r}; known: {', '.join(FEWSHOT_BASELINES)}")
        if k < 1 or demo_input_tokens < 32:
            raise ValueError("k must be >= 1 and demo_input_tokens >= 32")
        self.method, self.lm, self.k = method, lm, k
        self.demo_input_tokens, self.embedder, self.seed = demo_input_tokens, embedder, seed

    def settings(self) -> dict[str, Any]:
        embedder = self.embedder or HashingEmbedder()
        return {"method": self.method, "k": self.k, "demo_input_tokens": self.demo_input_tokens,
                "seed": self.seed, "embedder": embedder.identity()
                if self.method == "knn-fewshot" else None}

    def compile(self, student: RubricJudge, *, trainset: Any, teacher: Any = None,
                valset: Any = None, **kwargs: Any) -> RubricJudge:
        """An aligned copy of ``student`` showing the demos the DSPy optimizer chose."""
        if not isinstance(student, RubricJudge):
            raise TypeError(f"{self.method} compiles a judgealign RubricJudge, got "
                            f"{type(student).__name__}")
        labels = _as_labelset(trainset).validate(student.rubric)
        lm = self.lm or student.get_lm() or dspy.settings.lm
        if lm is None:
            raise RuntimeError(f"{self.method} needs an LM: pass lm= or call dspy.configure")
        judge = student.deepcopy()
        report = BaselineReport(self.method, self.settings())
        fixed: dict[str, list[Episode]] = {}
        retrievers: dict[str, tuple[Any, dict[str, Episode]]] = {}
        with CostMeter(lm) as meter, dspy.context(lm=lm):
            for dim in judge.dimensions:
                episodes = labels.episodes(dim)
                if not episodes:
                    continue
                examples = self._examples(judge, episodes)
                by_item = {e.item_id: e for e in episodes}
                if self.method == "knn-fewshot":
                    embed = (self.embedder or HashingEmbedder()).embed
                    vectorizer = dspy.Embedder(embed, caching=False)
                    retrievers[dim] = (_knn(self.k, examples, judge.rubric.input_names,
                                            vectorizer), by_item)
                    report.demos[dim] = []  # chosen per judged item
                    continue
                chosen = (self._labeled(judge, dim, examples, by_item)
                          if self.method == "labeled-fewshot"
                          else self._bootstrapped(judge, dim, examples, by_item))
                fixed[dim] = chosen
                report.demos[dim] = [e.item_id for e in chosen]
        report.lm_calls, report.seconds = meter.calls, meter.seconds
        report.prompt_tokens, report.completion_tokens = (meter.prompt_tokens,
                                                          meter.completion_tokens)
        judge.attach_memory(DemoSet(fixed=fixed, retrievers=retrievers,
                                    input_names=judge.rubric.input_names))
        for djudge in judge.judges.values():
            djudge.k = self.k
            djudge.demo_input_tokens = self.demo_input_tokens
            djudge.predict.demos = []  # served by the DemoSet (see the module docstring)
        judge.report = report
        return judge

    # --- per dimension --------------------------------------------------------------------

    def _examples(self, judge: RubricJudge, episodes: Sequence[Episode]) -> list[dspy.Example]:
        examples = episode_examples(episodes, judge.rubric.input_names)
        random.Random(self.seed).shuffle(examples)
        return examples

    def _labeled(self, judge: RubricJudge, dim: str, examples: list[dspy.Example],
                 by_item: Mapping[str, Episode]) -> list[Episode]:
        compiled = dspy.LabeledFewShot(k=self.k).compile(_student(judge, dim), trainset=examples)
        return [by_item[demo.item_id] for demo in compiled.predict.demos]

    def _bootstrapped(self, judge: RubricJudge, dim: str, examples: list[dspy.Example],
                      by_item: Mapping[str, Episode]) -> list[Episode]:
        scale, allows_na = judge.rubric.scale, judge.rubric.dimension(dim).allows_na
        # BootstrapFewShot keeps one augmented demo per example the metric accepted, in the
        # order they were accepted, so the accepted runs identify the augmented demos.
        accepted: list[Episode] = []

        def metric(example: dspy.Example, pred: DimensionResult, trace: Any = None) -> bool:
            ok = (isinstance(pred, DimensionResult) and not pred.failed
                  and pred.score == parse_score(example.score, scale=scale, allow_na=allows_na))
            if ok:
                accepted.append(Episode(example.item_id, dim, dict(by_item[example.item_id].inputs),
                                        pred.score, pred.rationale))
            return ok

        optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=self.k,
                                          max_labeled_demos=self.k, max_rounds=1)
        chatter = io.StringIO()
        # BootstrapFewShot prints a summary and draws its own bar; keep the CV output clean.
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            compiled = optimizer.compile(_student(judge, dim), trainset=examples)
        log.debug("bootstrap-fewshot %s: %s", dim, chatter.getvalue().strip())
        demos = list(compiled.predict.demos)
        augmented = [d for d in demos if d.get("augmented")]
        if len(augmented) != len(accepted):
            raise RuntimeError(f"bootstrap-fewshot on {dim!r}: {len(augmented)} bootstrapped "
                               f"demos but {len(accepted)} accepted runs")
        labelled = [by_item[d.item_id] for d in demos if not d.get("augmented")]
        return accepted + labelled


def episode_examples(episodes: Iterable[Episode], input_names: Sequence[str]
                     ) -> list[dspy.Example]:
    """Labelled episodes as the ``dspy.Example`` trainset a DSPy optimizer takes: the item's
    inputs (marked as inputs), the expert ``score`` as a level string, the ``rationale`` and
    the ``item_id``."""
    return [dspy.Example(**{n: e.inputs.get(n, "") for n in input_names},
                         score=format_score(e.score),
                         rationale=e.rationale or "(no rationale given)",
                         item_id=e.item_id).with_inputs(*input_names)
            for e in episodes]


def _student(judge: RubricJudge, dim: str) -> DimensionJudge:
    """A fresh copy of one dimension's judge without memory, for a DSPy optimizer to compile
    (DSPy resets its predictor's LM, so the caller runs it under ``dspy.context(lm=...)``)."""
    source = judge.judges[dim]
    student = DimensionJudge(judge.rubric, dim, k=0, demo_input_tokens=source.demo_input_tokens,
                             max_attempts=source.max_attempts, layout=source.layout)
    student.set_guidelines(source.guidelines)
    return student


def _knn(k: int, examples: Sequence[dspy.Example], input_names: Sequence[str],
         vectorizer: Any) -> Any:
    """``dspy.KNNFewShot``'s retriever over ``examples``."""
    if len(examples) < 2:
        # dspy.KNN squeezes its score vector, which breaks on a single example.
        return _AllNeighbours(k, list(examples), vectorizer)
    optimizer = dspy.KNNFewShot(k, list(examples), vectorizer=vectorizer,
                                max_bootstrapped_demos=0, max_labeled_demos=k)
    return optimizer.KNN


class _AllNeighbours:
    """The retriever of a training set of at most one example: that example, if any."""

    def __init__(self, k: int, trainset: list[dspy.Example], embedding: Any) -> None:
        self.k, self.trainset, self.embedding = k, trainset, embedding

    def __call__(self, **_: str) -> list[dspy.Example]:
        return self.trainset[: self.k]


__all__ = ["FEWSHOT_BASELINES", "UNSUPPORTED_BASELINES", "BaselineReport", "DemoSet",
           "FewShotBaseline", "UnsupportedBaseline", "episode_examples", "unsupported_reason"]
