from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from scenarios import ROWS, Reflector, banana_judge, label_rows

import judgealign
from judgealign import artifacts
from judgealign.config import load_config
from judgealign.errors import ArtifactError
from judgealign.labels import LabelSet
from judgealign.optimizers.memalign import MemAlign
from judgealign.program import RubricJudge
from judgealign.testing import scripted_lm

PROBES = [{"answer": "A banana powers the sun."}, {"answer": "Ice melts at zero degrees."}]


@pytest.fixture
def aligned(tiny_rubric):
    labels = LabelSet.from_records(label_rows(), rubric=tiny_rubric)
    lm = scripted_lm(banana_judge)
    return MemAlign(reflection_lm=scripted_lm(Reflector()), k=2).compile(
        RubricJudge(tiny_rubric, lm=lm), trainset=labels)


def prompts_and_ids(judge, lm):
    judge.set_lm(lm)
    results = judge.batch(PROBES, num_threads=1)  # history in a fixed order
    prompts = [entry["messages"] for entry in lm.history]
    ids = [[r[d].retrieved_ids for d in judge.dimensions] for r in results]
    return prompts, ids


def test_round_trip_gives_identical_prompts_and_retrievals(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    before = prompts_and_ids(aligned, scripted_lm(banana_judge))
    loaded = judgealign.load(path, lm=scripted_lm(banana_judge))
    after = prompts_and_ids(loaded, scripted_lm(banana_judge))
    assert after == before
    assert before[1][0][0]  # retrieval really happened
    assert [g.text for g in loaded.judges["correctness"].guidelines] == \
        [g.text for g in aligned.judges["correctness"].guidelines]
    assert loaded.judges["correctness"].rejected == aligned.judges["correctness"].rejected
    assert loaded.seen == aligned.seen


def test_artifact_layout_is_json_and_self_contained(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    manifest = json.loads((path / "judge.json").read_text())
    assert manifest["format_version"] == artifacts.FORMAT_VERSION
    assert manifest["rubric"]["name"] == "tiny"
    assert manifest["embedder"] == {"kind": "hashing", "version": 1, "dim": 2048}
    assert set(manifest["files"]) == {"program.json", "memory/guidelines.json",
                                      "memory/episodes.jsonl", "memory/seen.json"}
    episodes = [json.loads(x) for x in (path / "memory/episodes.jsonl").read_text().splitlines()]
    assert {e["inputs"]["answer"] for e in episodes} == {a for _, a, _, _ in ROWS}
    assert (path / "memory/chroma").is_dir()
    for file in path.rglob("*"):
        if file.is_file() and file.suffix in (".json", ".jsonl"):
            json.loads(file.read_text()) if file.suffix == ".json" else None


def test_lm_swap_on_load(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    other = scripted_lm(lambda p: {"score": "2", "rationale": "other model"})
    loaded = judgealign.load(path, lm=other)
    result = loaded(answer="anything", dimensions=["correctness"])
    assert result["correctness"].rationale == "other model"
    assert loaded.get_lm() is other


def test_lm_from_config_string(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    loaded = judgealign.load(path, lm="openai/gpt-4.1-mini")
    assert loaded.get_lm().model == "openai/gpt-4.1-mini"
    cfg = tmp_path / "j.toml"
    cfg.write_text('[lm]\nmodel = "anthropic/claude-sonnet-4-5"\n')
    assert judgealign.load(path, config=cfg).get_lm().model == "anthropic/claude-sonnet-4-5"


@pytest.mark.parametrize("rel,damage,match", [
    ("judge.json", lambda p: p.write_text(p.read_text()[:40]), "not valid JSON"),
    ("program.json", lambda p: p.write_text(p.read_text()[:-30]), "checksum"),
    ("memory/guidelines.json",
     lambda p: p.write_text(p.read_text().replace("banana", "lemonade")), "checksum"),
    ("memory/episodes.jsonl", lambda p: p.unlink(), "missing"),
    ("judge.json", lambda p: p.write_text(p.read_text().replace(
        '"format_version": 1', '"format_version": 99')), "newer judgealign"),
])
def test_corruption_is_refused_with_a_clear_error(aligned, tmp_path, rel, damage, match):
    path = aligned.save(tmp_path / "judge")
    damage(path / rel)
    with pytest.raises(ArtifactError, match=match):
        judgealign.load(path, lm=scripted_lm(banana_judge))


def test_wrong_checksum_in_manifest_is_refused(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    manifest = json.loads((path / "judge.json").read_text())
    manifest["files"]["memory/seen.json"] = "0" * 64
    (path / "judge.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="seen.json does not match its checksum"):
        judgealign.load(path, lm=scripted_lm(banana_judge))


@pytest.mark.parametrize("damage", ["delete", "garble"])
def test_missing_or_broken_index_is_rebuilt_with_a_warning(aligned, tmp_path, damage):
    path = aligned.save(tmp_path / "judge")
    before = prompts_and_ids(judgealign.load(path, lm=scripted_lm(banana_judge)),
                             scripted_lm(banana_judge))
    index = path / "memory/chroma"
    if damage == "delete":
        shutil.rmtree(index)
    else:
        for file in index.rglob("*.sqlite3"):
            file.write_bytes(b"not a database" * 100)
    with pytest.warns(UserWarning, match="rebuilt the index"):
        loaded = judgealign.load(path, lm=scripted_lm(banana_judge))
    assert prompts_and_ids(loaded, scripted_lm(banana_judge)) == before


def test_embedder_mismatch_is_refused_unless_reembedding(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    other = load_config(environ={}, overrides={"embedder": {"dim": 512}})
    with pytest.raises(ArtifactError, match="reembed=True"):
        judgealign.load(path, lm=scripted_lm(banana_judge), config=other)
    loaded = judgealign.load(path, lm=scripted_lm(banana_judge), config=other, reembed=True)
    assert loaded.memory.embedder.identity()["dim"] == 512
    assert len(loaded.memory) == len(aligned.memory)


def test_interrupted_save_leaves_the_previous_judge_intact(aligned, tmp_path, monkeypatch):
    path = aligned.save(tmp_path / "judge")
    snapshot = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    forgotten = aligned.unalign(["b1"])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "_write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        forgotten.save(path)
    now = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert now == snapshot
    assert [p.name for p in tmp_path.iterdir()] == ["judge"]  # no temporary left behind
    monkeypatch.undo()
    forgotten.save(path)
    assert "b1" not in judgealign.load(path, attach_lm=False).memory.item_ids()


def test_refuses_to_overwrite_a_directory_that_is_not_a_judge(aligned, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("do not delete")
    with pytest.raises(ArtifactError, match="not a saved judge"):
        aligned.save(tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.txt").exists()


def test_no_secret_in_any_saved_file(aligned, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-987")
    settings = load_config(environ={}, overrides={"lm": {"model": "openai/gpt-4.1-mini",
                                                         "api_key_env": "OPENAI_API_KEY"}})
    judge = judgealign.load(aligned.save(tmp_path / "a"), config=settings)
    assert judge.get_lm().kwargs.get("api_key") == "sk-very-secret-987"
    path = judge.save(tmp_path / "judge", config=settings)
    for file in path.rglob("*"):
        if file.is_file():
            assert b"sk-very-secret-987" not in file.read_bytes(), file


def test_memory_summary_lists_kept_and_rejected(aligned, tmp_path):
    summary = artifacts.read_memory(aligned.save(tmp_path / "judge"))
    dim = summary["dimensions"]["correctness"]
    assert dim["episodes"] == 6
    assert [g["text"] for g in dim["kept"]] and dim["rejected"][0]["reason"] == "ungrounded"


def test_no_pickle_loading_in_the_package():
    root = Path(judgealign.__file__).parent.parent
    for folder in ("judgealign", "signatures", "optimizers", "datasets"):
        for file in (root / folder).rglob("*.py"):
            text = file.read_text()
            forbidden = ("pickle" + ".load", "allow_pickle" + "=True")  # not a match itself
            assert not any(word in text for word in forbidden), file


def test_loading_an_unaligned_judge_works(tiny_rubric, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = RubricJudge(tiny_rubric).save(tmp_path / "plain")
        loaded = judgealign.load(path, lm=scripted_lm(banana_judge))
    assert loaded.memory is None
    assert loaded(answer="x")["correctness"].score == 3
