"""Extractive guidelines: the experts' own sentences, with no LM (issue 14).

The real-rationale tests use the bundled SQuALITY human evaluation (reviewers' comments on
spans of summaries); the notebook set's generated rationales check long-sentence cutting.
"""

from __future__ import annotations

import json
import re

import pytest

from judgealign.cli import main
from judgealign.datasets import load_ml_notebooks, load_squality
from judgealign.memory.embedders import HashingEmbedder
from judgealign.memory.extractive import MIN_UNIT_CHARS, extract_guidelines, rationale_units
from judgealign.memory.semantic import MAX_GUIDELINE_CHARS, Guideline, render_guidelines
from judgealign.optimizers.memalign import MemAlign
from judgealign.program import RubricJudge
from judgealign.testing import scripted_lm


@pytest.fixture(scope="module")
def squality():
    return load_squality()


def _no_lm(prompt: str):
    raise AssertionError(f"extractive mode called an LM: {prompt[:80]}")


def test_units_are_verbatim_comments_not_the_quoted_spans():
    rationale = ('"She is a former carnival owner" / "for ten years" -- Not quite true; we never '
                 'learn about her past at all\n"Her husband is a hero." -- Incorrect'
                 ' | -- The summary misses the ending of the story entirely. It is too short '
                 'to be of any use.')
    units = rationale_units(rationale)
    assert units == ["Not quite true; we never learn about her past at all",
                     "The summary misses the ending of the story entirely.",
                     "It is too short to be of any use."]  # "Incorrect" is too short to guide
    assert all(u in rationale for u in units)


def test_long_sentences_are_cut_into_verbatim_clauses():
    data = load_ml_notebooks()
    rationales = [e.rationale for e in data.labels.episodes("data_imputation")]
    long = [r for r in rationales if len(r) > MAX_GUIDELINE_CHARS]
    assert long, "the notebook set has rationales longer than a guideline"
    for r in long:
        units = rationale_units(r)
        assert units
        for u in units:
            assert u in r and MIN_UNIT_CHARS <= len(u) <= MAX_GUIDELINE_CHARS


def test_extractive_guidelines_on_real_rationales_are_their_sentences(squality):
    embedder = HashingEmbedder()
    for dim in ("correctness", "selection"):
        episodes = squality.labels.episodes(dim)
        by_item = {e.item_id: e for e in episodes}
        found = extract_guidelines(episodes, embedder, limit=6)
        assert len(found) == 6
        if dim == "correctness":  # deterministic: no seed, no sampling
            again = extract_guidelines(episodes, embedder, limit=6)
            assert [g.to_dict() for g in again] == [g.to_dict() for g in found]
        for g in found:
            assert g.mode == "extractive" and g.dimension == dim
            assert len(g.sources) >= 2 and g.support == len(set(g.sources))
            # a sentence of the reviewers' comments, not of the summary they commented on
            assert any(g.text in rationale_units(by_item[s].rationale) for s in g.sources)
            assert not any(g.text in by_item[s].inputs["response"] for s in g.sources)
            # every source is an example of the score level the guideline carries
            assert {str(by_item[s].score) for s in g.sources} == {g.scores}
        # levels take turns: the six guidelines cover every level (1-4) of the rubric
        assert {g.scores for g in found} == {"1", "2", "3", "4"}


def test_aligning_with_extractive_mode_then_unaligning_its_sources(squality, tmp_path, capsys):
    items = sorted(squality.labels.item_ids)[:90]
    train = squality.labels.subset(items)
    judge = MemAlign(reflection_lm=scripted_lm(_no_lm), reflection="extractive",
                     max_guidelines=4).compile(RubricJudge(squality.rubric), trainset=train)
    for rep in judge.report.dimensions:
        assert rep.modes == ["extractive"] and rep.reflection_calls == 0
        assert rep.kept_by_mode == {"extractive": rep.kept} and rep.kept > 0
    kept = judge.judges["overall"].guidelines
    assert {s for g in kept for s in g.sources} <= set(items)
    instructions = judge.judges["overall"].predict.signature.instructions
    assert render_guidelines(kept) in instructions
    assert all(f"(experts scored {g.scores})" in instructions for g in kept)

    target = kept[0]
    others = [g for g in kept[1:] if set(g.sources) - set(target.sources)]
    forgot = judge.unalign(target.sources)
    left = forgot.judges["overall"].guidelines
    assert target.text not in [g.text for g in left]  # all its sources are gone
    assert {g.text for g in others} <= {g.text for g in left}
    assert not {s for g in left for s in g.sources} & set(target.sources)

    path = judge.save(tmp_path / "judge")
    assert main(["memory", "show", str(path)]) == 0
    out = capsys.readouterr().out
    shown = out.split("\noverall:")[1]
    for g in kept:
        assert g.text in shown
        assert f"mode: extractive, sources: {', '.join(g.sources)}" in shown
    assert re.search(r"\[experts scored [1-4]\]", shown)


def test_guideline_modes_round_trip_and_old_data_loads_as_cited():
    g = Guideline("Experts want the ending covered.", "overall", ("a", "b"), support=2,
                  mode="extractive", scores="1", validation=(1.5, 0.5))
    data = json.loads(json.dumps(g.to_dict()))
    assert Guideline.from_dict(data) == g
    old = {k: v for k, v in data.items() if k not in ("mode", "scores", "validation")}
    legacy = Guideline.from_dict(old)
    assert (legacy.mode, legacy.scores, legacy.validation) == ("cited", None, None)
    assert legacy.with_sources(["a"]).mode == "cited"
    assert g.with_sources(["b"]).mode == "extractive"
