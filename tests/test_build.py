"""The one composition place (judgealign.build): what align ships is what cv measures; the
configured LM is the fallback everywhere; retries and caches cannot lie."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dspy
import pytest
from scenarios import Reflector, banana_judge, label_rows

import judgealign
from judgealign import build
from judgealign.config import load_config
from judgealign.labels import LabelSet
from judgealign.program import RubricJudge
from judgealign.testing import scripted_lm

ROOT = Path(__file__).resolve().parent.parent


def _state(judge) -> dict:
    state = judge.dump_state()
    state.pop("report")  # timings differ between runs
    return state


def test_align_and_a_cv_fold_compile_identical_state(tiny_rubric):
    labels = LabelSet.from_records(label_rows() + label_rows(dimension="clarity"),
                                   rubric=tiny_rubric)
    train = labels.subset(["b1", "b2", "s1", "s2"])
    settings = load_config(environ={}, overrides={
        "memory": {"validate_guidelines": True, "validation_budget": 12, "k": 2,
                   "max_guidelines": 3}})
    reflector = Reflector()

    def respond(prompt):  # one model judges and reflects, as with the embedded default
        return reflector(prompt) if "expert rationale:" in prompt else banana_judge(prompt)

    judge_lm = scripted_lm(respond)
    shipped = judgealign.align(RubricJudge(tiny_rubric, lm=judge_lm), train, config=settings)
    fold = build.compile(RubricJudge(tiny_rubric, lm=judge_lm), train, settings,
                         variant="memalign")
    assert _state(shipped) == _state(fold)
    assert any(g["mode"] == "cited" for d in _state(fold)["dimensions"].values()
               for g in d["guidelines"])  # the reflection LM really distilled something
    # ...and the options the user set really reached the optimizer both used.
    opt = build.optimizer(settings, "memalign", program=RubricJudge(tiny_rubric, lm=judge_lm))
    assert opt.validate and opt.validation_budget == 12 and opt.k == 2
    assert shipped.report.settings == opt.settings()


@pytest.mark.parametrize("variant,semantic,episodic", [
    ("memalign", True, True), ("semantic-only", True, False), ("episodic-only", False, True)])
def test_a_variant_is_a_settings_override(variant, semantic, episodic):
    settings = load_config(environ={}, overrides={"memory": {"k": 5}})
    varied = build.variant_settings(settings, variant)
    assert (varied.memory.semantic, varied.memory.episodic) == (semantic, episodic)
    assert varied.memory.k == 5  # everything else is the user's
    assert build.optimizer(settings, "baseline") is None


def test_unknown_variant_is_a_clear_error():
    from judgealign.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown variant 'bogus'"):
        build.variant_settings(load_config(environ={}), "bogus")


def test_a_judge_without_an_lm_uses_the_configured_lm(tiny_rubric, tmp_path, monkeypatch):
    from judgealign import lm as lm_module

    (tmp_path / "judgealign.toml").write_text('[lm]\nmodel = "openai/from-config"\n')
    built = []

    def fake_build_lm(settings):
        built.append(settings.model)
        return scripted_lm(lambda p: {"score": "2", "rationale": "configured"})

    monkeypatch.setattr(lm_module, "build_lm", fake_build_lm)
    monkeypatch.setattr(lm_module, "_CONFIGURED", {})
    result = RubricJudge(tiny_rubric)(answer="a")  # no lm=, no dspy.configure
    assert result["correctness"].rationale == "configured"
    assert built == ["openai/from-config"]  # built once, from judgealign.toml


def test_a_retry_is_a_different_request_even_with_the_cache_on(tiny_rubric):
    answers = iter(["not json at all", {"score": "2", "rationale": "second try"}])
    lm = dspy.LM("scripted/retry", engine=_Engine(lambda p: next(answers)), cache=True,
                 temperature=0.0, max_tokens=64)
    dspy.configure_cache(enable_memory_cache=True, enable_disk_cache=False)
    try:
        result = RubricJudge(tiny_rubric, lm=lm)(answer="a", dimensions=["correctness"])
    finally:
        dspy.configure_cache(enable_memory_cache=False, enable_disk_cache=False)
    assert result["correctness"].score == 2 and not result["correctness"].failed
    first, second = lm.engine.configs
    assert second.temperature >= 0.7 > (first.temperature or 0.0)


def test_changing_api_base_changes_the_cache_key():
    from dspy.clients.execution import IGNORED_CACHE_KEYS, prepare

    from judgealign.config import LMSettings
    from judgealign.lm import build_lm

    def key(api_base):
        lm = build_lm(LMSettings(model="openai/m", api_base=api_base))
        call = prepare(lm, None, [{"role": "user", "content": "hi"}], {})
        return dspy.cache.cache_key(call.key(lm, False), IGNORED_CACHE_KEYS)

    assert key("http://127.0.0.1:8000/v1") != key("http://127.0.0.1:9000/v1")
    assert key("http://127.0.0.1:8000/v1") == key("http://127.0.0.1:8000/v1/")


def test_an_item_is_embedded_once_per_judgment(tiny_rubric):
    labels = LabelSet.from_records(label_rows() + label_rows(dimension="clarity"),
                                   rubric=tiny_rubric)
    judge = build.compile(RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge)), labels,
                          load_config(environ={}, overrides={"memory": {"semantic": False}}))
    embedder = judge.memory.embedder
    calls = []
    original = embedder.embed
    embedder.embed = lambda texts: calls.append(len(texts)) or original(texts)
    result = judge(answer="A banana.")
    assert all(r.retrieved_ids for r in result)  # both dimensions retrieved demos...
    assert calls == [1]  # ...from one embedding of the item
    calls.clear()
    judge.batch([{"answer": "x"}, {"answer": "y"}, {"answer": "z"}])
    assert sum(calls) == 3


def test_readme_python_snippet_runs_as_written(tmp_path, monkeypatch):
    """The README's Python API block, executed verbatim in a fresh folder: no lm=, no
    dspy.configure -- the configured LM (here a scripted stand-in for the embedded model)."""
    from judgealign import lm as lm_module
    from judgealign.datasets import load_ml_notebooks

    block = re.search(r"## Python API\n+```python\n(.*?)```", (ROOT / "README.md").read_text(),
                      flags=re.S).group(1)
    data = load_ml_notebooks()
    ids = data.labels.item_ids
    rows = [{"item_id": lab.item_id, "inputs": dict(lab.inputs), "dimension": lab.dimension,
             "score": "N/A" if lab.score is None else lab.score, "rationale": lab.rationale}
            for lab in data.labels if lab.item_id in ids[:6]]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def respond(prompt):
        if "expert rationale:" in prompt:
            return {"guidelines": []}
        return {"score": "2", "rationale": "scripted"}

    monkeypatch.setattr(lm_module, "build_lm",
                        lambda settings: scripted_lm(respond, name=settings.model))
    monkeypatch.setattr(lm_module, "_CONFIGURED", {})
    more = data.labels.subset(ids[6:8])
    (tmp_path / "judgealign.toml").write_text('[lm]\nmodel = "local/configured"\n')
    namespace = {"text": data.items[ids[10]]["notebook"], "more_labels": more}
    exec(compile(block, "README.md", "exec"), namespace)
    judge = namespace["judge"]
    assert namespace["result"]["model_training"].score == 2
    assert [lm.model for lm in lm_module._CONFIGURED.values()] == ["local/configured"]
    assert len(judge.memory) == len(rows) + len(list(more))
    assert judge.get_lm().model == "openai/gpt-4.1-mini"


class _Engine:
    """A scripted engine that also records each request's config."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens"})

    def __init__(self, respond):
        from judgealign.testing import ScriptedEngine

        self._inner = ScriptedEngine(respond)
        self.configs = []

    def complete(self, request):
        self.configs.append(request.config)
        return self._inner.complete(request)

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


def test_remote_models_count_tokens_with_their_own_tokenizer():
    from judgealign.items import estimate_tokens
    from judgealign.lm import lm_token_counter

    count = lm_token_counter(dspy.LM("openai/gpt-4.1-mini"))
    text = "def f(x):\n    return x ** 2  # squares\n" * 20
    assert count(text) != estimate_tokens(text)  # tiktoken, not characters / 3.5
    assert count("hello world") == 2
    unknown = lm_token_counter(dspy.LM("someprovider/unknown-model"))
    assert unknown("hello world") >= 2  # litellm's fallback tokenizer or the estimate


def test_the_cli_variant_list_matches_what_cv_can_run():
    from judgealign.evaluation.options import REFERENCES, llm_variants
    from judgealign.variant_names import VARIANT_NAMES

    assert set(VARIANT_NAMES) == set(llm_variants()) | set(REFERENCES)


def test_retrieval_reports_similarities_and_leaves_excluded_items_out(tiny_rubric):
    import numpy as np

    from judgealign.memory.records import item_text

    labels = LabelSet.from_records(label_rows(), rubric=tiny_rubric)
    judge = build.compile(RubricJudge(tiny_rubric, lm=scripted_lm(banana_judge)), labels,
                          load_config(environ={}, overrides={"memory": {"semantic": False}}))
    memory = judge.memory
    item = {"answer": "A banana is the answer to the energy question."}  # b1's own text
    found = memory.retrieve_scored(item, dimension="correctness", k=3)
    assert found[0][0].item_id == "b1"
    vectors = memory.embedder.embed([item_text(e.inputs) for e, _ in found])
    expected = vectors @ memory.embed_query(item)
    assert np.allclose([s for _, s in found], expected, atol=1e-4)  # Chroma's own distances
    kept = memory.retrieve_scored(item, dimension="correctness", k=3, exclude={"b1", "b2"})
    assert len(kept) == 3 and not {"b1", "b2"} & {e.item_id for e, _ in kept}
    assert [e for e, _ in found] == memory.retrieve(item, dimension="correctness", k=3)
