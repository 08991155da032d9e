from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
from scenarios import ROWS, Reflector, banana_judge, label_rows

import judgealign
from judgealign import artifacts
from judgealign.config import load_config
from judgealign.errors import ArtifactError, JudgeAlignError
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


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below root with its bytes and modification time."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def rehash(path: Path) -> None:
    """Recompute every checksum after a deliberate edit (what a careful tamperer does)."""
    manifest = json.loads((path / "judge.json").read_text())
    manifest["files"] = {rel: hashlib.sha256((path / rel).read_bytes()).hexdigest()
                         if (path / rel).is_file() else digest
                         for rel, digest in manifest["files"].items()}
    data = (json.dumps(manifest, indent=1) + "\n").encode()
    (path / "judge.json").write_bytes(data)
    (path / "judge.json.sha256").write_text(hashlib.sha256(data).hexdigest())


def edit_state(path: Path, change) -> None:
    state = json.loads((path / "program.json").read_text())
    state = change(state)
    (path / "program.json").write_text(json.dumps(state))
    rehash(path)


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
    assert loaded.artifact_sha256 == hashlib.sha256((path / "judge.json").read_bytes()).hexdigest()


def test_state_round_trip_without_disk(aligned, tiny_rubric):
    state = aligned.dump_state()
    json.dumps(state)  # plain JSON data
    assert {e["item_id"] for e in state["episodic"]["episodes"]} == {r[0] for r in ROWS}
    copy = RubricJudge(tiny_rubric).load_state(state)
    assert copy.dump_state() == state
    assert prompts_and_ids(copy, scripted_lm(banana_judge)) == \
        prompts_and_ids(aligned, scripted_lm(banana_judge))


@pytest.mark.parametrize("change,field", [
    (lambda s: {**s, "dimensions": {**s["dimensions"], "clarity": {
        **s["dimensions"]["clarity"], "k": "abc"}}}, "dimensions.clarity.k"),
    (lambda s: {**s, "seen": [1, 2]}, "seen"),
    (lambda s: {**s, "surprise": 1}, "surprise"),
])
def test_load_state_refuses_malformed_state_before_applying_any(aligned, tiny_rubric, change,
                                                                field):
    fresh = RubricJudge(tiny_rubric)
    before = fresh.dump_state()
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        fresh.load_state(change(aligned.dump_state()))
    assert fresh.dump_state() == before


def test_artifact_layout_is_json_and_self_contained(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    manifest = json.loads((path / "judge.json").read_text())
    assert manifest["format_version"] == artifacts.FORMAT_VERSION
    assert manifest["rubric"]["name"] == "tiny"
    assert manifest["embedder"] == {"kind": "hashing", "version": 1, "dim": 2048}
    files = set(manifest["files"])
    assert {"program.json", "memory/episodes.jsonl"} <= files
    assert any(f.startswith("memory/chroma/") for f in files)  # the index is checksummed too
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert on_disk == files | {"judge.json", "judge.json.sha256"}
    episodes = [json.loads(x) for x in (path / "memory/episodes.jsonl").read_text().splitlines()]
    assert {e["inputs"]["answer"] for e in episodes} == {a for _, a, _, _ in ROWS}
    state = json.loads((path / "program.json").read_text())
    assert state["episodic"]["count"] == len(episodes)
    assert [p.name for p in tmp_path.iterdir()] == ["judge"]  # no lock file or leftovers


def test_loading_writes_nothing_inside_the_saved_judge(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    before = snapshot(path)
    loaded = judgealign.load(path, lm=scripted_lm(banana_judge))
    loaded.batch(PROBES)  # retrieval queries the saved index...
    assert loaded(answer="A banana!")["correctness"].retrieved_ids
    loaded.memory.close()
    assert snapshot(path) == before  # ...through a private copy: not one byte or mtime changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge"]


def test_loaded_memory_queries_the_saved_index_not_a_python_copy(aligned, tmp_path):
    loaded = judgealign.load(aligned.save(tmp_path / "judge"), attach_lm=False)
    store = loaded.memory._store
    assert store.persistent and store.collection.count() == len(aligned.memory)
    assert not hasattr(loaded.memory, "_vectors")


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
    ("judge.json", lambda p: p.write_text(p.read_text()[:40]), "does not match"),
    ("judge.json", lambda p: p.write_text(p.read_text().replace("tiny", "tinz")),
     "does not match judge.json.sha256"),
    ("judge.json.sha256", lambda p: p.unlink(), "cannot be verified"),
    ("program.json", lambda p: p.write_text(p.read_text()[:-30]), "checksum"),
    ("program.json", lambda p: p.write_text(p.read_text().replace("banana", "lemonade")),
     "checksum"),
    ("memory/episodes.jsonl", lambda p: p.unlink(), "missing"),
])
def test_corruption_is_refused_with_a_clear_error(aligned, tmp_path, rel, damage, match):
    path = aligned.save(tmp_path / "judge")
    damage(path / rel)
    with pytest.raises(ArtifactError, match=match):
        judgealign.load(path, lm=scripted_lm(banana_judge))


@pytest.mark.parametrize("change,match", [
    (lambda s: [], "expected an object"),
    (lambda s: {**s, "dimensions": [1]}, "dimensions"),
    (lambda s: {**s, "dimensions": {**s["dimensions"], "clarity": {
        **s["dimensions"]["clarity"], "k": "abc"}}}, r"dimensions\.clarity\.k"),
    (lambda s: {**s, "dimensions": {**s["dimensions"], "correctness": {
        **s["dimensions"]["correctness"], "guidelines": [{"text": 1}]}}}, "guideline"),
    (lambda s: {**s, "episodic": None}, "no episodic memory"),
    (lambda s: {**s, "episodic": {**s["episodic"], "embedder": {"kind": "litellm",
                                                                "model": "openai/emb"}}},
     "configure it explicitly"),
    (lambda s: {**s, "format": 7}, "state format"),
])
def test_tampered_state_with_valid_checksums_is_refused(aligned, tmp_path, change, match):
    path = aligned.save(tmp_path / "judge")
    edit_state(path, change)
    with pytest.raises(JudgeAlignError, match=match):
        judgealign.load(path, lm=scripted_lm(banana_judge))


def test_malformed_episode_line_is_refused(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    episodes = path / "memory/episodes.jsonl"
    episodes.write_text(episodes.read_text() + '{"item_id": "x", "dimension": 3}\n')
    rehash(path)
    with pytest.raises(ArtifactError, match="episodes.jsonl, line 7"):
        judgealign.load(path, lm=scripted_lm(banana_judge))


def test_manifest_with_a_format_from_the_future_is_refused(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    manifest = json.loads((path / "judge.json").read_text())
    manifest["format_version"] = 99
    (path / "judge.json").write_text(json.dumps(manifest))
    rehash(path)
    with pytest.raises(ArtifactError, match="newer judgealign"):
        judgealign.load(path, lm=scripted_lm(banana_judge))


@pytest.mark.parametrize("rel", ["memory/chroma", "memory/episodes.jsonl", "program.json"])
def test_symlinks_inside_a_saved_judge_are_refused_and_never_followed(aligned, tmp_path, rel):
    path = aligned.save(tmp_path / "judge")
    outside = tmp_path / "outside"
    shutil.move(str(path / rel), str(outside))
    os.symlink(outside, path / rel)
    before = snapshot(outside) if outside.is_dir() else outside.read_bytes()
    with pytest.raises(ArtifactError, match="symbolic link"):
        judgealign.load(path, lm=scripted_lm(banana_judge))
    after = snapshot(outside) if outside.is_dir() else outside.read_bytes()
    assert after == before


def test_a_manifest_path_leaving_the_folder_is_refused(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    manifest = json.loads((path / "judge.json").read_text())
    manifest["files"]["../../etc/hostname"] = "0" * 64
    (path / "judge.json").write_text(json.dumps(manifest))
    rehash(path)
    with pytest.raises(ArtifactError, match="leaves the judge folder"):
        judgealign.load(path, lm=scripted_lm(banana_judge))


@pytest.mark.parametrize("damage", ["delete", "garble"])
def test_missing_or_broken_index_is_rebuilt_in_memory_with_a_warning(aligned, tmp_path,
                                                                     damage):
    path = aligned.save(tmp_path / "judge")
    before = prompts_and_ids(judgealign.load(path, lm=scripted_lm(banana_judge)),
                             scripted_lm(banana_judge))
    index = path / "memory/chroma"
    if damage == "delete":
        shutil.rmtree(index)
    else:
        for file in index.rglob("*.sqlite3"):
            file.write_bytes(b"not a database" * 100)
    on_disk = snapshot(path)
    with pytest.warns(UserWarning, match="rebuilt the index"):
        loaded = judgealign.load(path, lm=scripted_lm(banana_judge))
    assert prompts_and_ids(loaded, scripted_lm(banana_judge)) == before
    assert snapshot(path) == on_disk  # rebuilt in memory, never on disk


def test_embedder_mismatch_is_refused_unless_reembedding(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    other = load_config(environ={}, overrides={"embedder": {"dim": 512}})
    with pytest.raises(JudgeAlignError, match="reembed=True"):
        judgealign.load(path, lm=scripted_lm(banana_judge), config=other)
    loaded = judgealign.load(path, lm=scripted_lm(banana_judge), config=other, reembed=True)
    assert loaded.memory.embedder.identity()["dim"] == 512
    assert len(loaded.memory) == len(aligned.memory)


def test_a_failed_save_leaves_the_previous_judge_intact(aligned, tmp_path, monkeypatch):
    path = aligned.save(tmp_path / "judge")
    before = {k: v[0] for k, v in snapshot(path).items()}
    forgotten = aligned.unalign(["b1"])

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts, "write_json", crash)
    with pytest.raises(ArtifactError, match="No space left"):
        forgotten.save(path)
    assert {k: v[0] for k, v in snapshot(path).items()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["judge"]  # no temporary left behind
    monkeypatch.undo()
    forgotten.save(path)
    assert "b1" not in judgealign.load(path, attach_lm=False).memory.item_ids()


def _kill_between_renames(path: Path, new_judge) -> None:
    """What a save killed after moving the old judge aside leaves behind."""
    staged = path.parent / "staging"
    new_judge.save(staged)
    os.replace(path, path.parent / f".{path.name}.old-deadbeef")
    os.replace(staged, path.parent / f".{path.name}.tmp-deadbeef")


def test_a_save_killed_between_its_renames_is_finished_by_the_next_load(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    _kill_between_renames(path, aligned.unalign(["b1"]))
    assert not path.exists()
    with pytest.warns(UserWarning, match="finished an interrupted save"):
        loaded = judgealign.load(path, attach_lm=False)
    assert "b1" not in loaded.memory.item_ids()  # the new judge, complete, won
    aligned.save(path)  # the next save removes what is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge"]


def test_a_save_killed_while_writing_is_rolled_back(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    os.replace(path, tmp_path / ".judge.old-cafe0001")
    (tmp_path / ".judge.tmp-cafe0001").mkdir()  # half-written: no manifest yet
    (tmp_path / ".judge.tmp-cafe0001" / "program.json").write_text("{")
    with pytest.warns(UserWarning, match="rolled back"):
        loaded = judgealign.load(path, attach_lm=False)
    assert "b1" in loaded.memory.item_ids()  # the previous judge is back
    aligned.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge"]


def test_leftovers_of_a_killed_save_are_removed_by_the_next_save(aligned, tmp_path):
    path = aligned.save(tmp_path / "judge")
    junk = tmp_path / ".judge.tmp-0badf00d"
    junk.mkdir()
    (junk / "big.bin").write_bytes(b"x" * 1000)
    judgealign.load(path, attach_lm=False)  # loading leaves siblings alone...
    assert junk.exists()
    aligned.save(path)  # ...saving cleans them up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge"]


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


def test_dropped_memories_release_their_collections(aligned):
    import gc

    import chromadb

    client = chromadb.EphemeralClient()
    before = len(client.list_collections())
    for _ in range(5):
        copy = aligned.deepcopy()
        copy(answer="banana")  # uses the copy's own collection
        del copy
    gc.collect()
    assert len(client.list_collections()) == before
