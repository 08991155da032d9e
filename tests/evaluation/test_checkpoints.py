"""Tests of judgealign.evaluation.checkpoints: resume, fingerprints, tampered files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from cv_cases import banana_labels, lms, run

from judgealign.config import MemorySettings, Settings, TrackingSettings
from judgealign.evaluation.checkpoints import (
    CheckpointWarning,
    lm_fingerprint,
    variant_settings_fingerprint,
)


def test_resume_reuses_finished_folds(tiny_rubric, tmp_path):
    labels = banana_labels(tiny_rubric)
    first_lms = lms()
    first = run(tiny_rubric, labels, lms=first_lms, checkpoint_dir=tmp_path)
    files = sorted(p.name for p in (tmp_path / "folds").iterdir())
    assert files == sorted(f"fold{f}-{v}.json" for f in range(3) for v in ("baseline",
                                                                           "memalign"))
    assert first_lms[0].engine.calls > 0

    again = lms()  # new LM objects with the same identity
    second = run(tiny_rubric, labels, lms=again, checkpoint_dir=tmp_path, resume=True)
    assert again[0].engine.calls == 0 and again[1].engine.calls == 0
    assert [r.to_dict() for r in second.records] == [r.to_dict() for r in first.records]
    assert all(c.reused for c in second.costs)

    (tmp_path / "folds" / "fold1-memalign.json").unlink()
    third = run(tiny_rubric, labels, checkpoint_dir=tmp_path, resume=True)
    redone = [c for c in third.costs if not c.reused]
    assert [(c.fold, c.variant) for c in redone] == [(1, "memalign")]
    assert redone[0].judge_calls == 4 * 2  # fold 1's items x 2 dimensions

    other_seed = run(tiny_rubric, labels, checkpoint_dir=tmp_path, resume=True, seed=1)
    assert not any(c.reused for c in other_seed.costs)  # other folds: nothing reused


def test_checkpoint_files_are_json(tiny_rubric, tmp_path):
    labels = banana_labels(tiny_rubric, 6)
    run(tiny_rubric, labels, variants=("baseline",), folds=2, checkpoint_dir=tmp_path)
    data = json.loads(Path(tmp_path / "folds" / "fold0-baseline.json").read_text())
    assert data["variant"] == "baseline" and len(data["fingerprint"]) == 64
    assert not list((tmp_path / "folds").glob("*.tmp"))


def _tamper_record(field, value):
    def edit(data):
        data["records"][0][field] = value
    return edit


TAMPERINGS = {
    "extra key": lambda d: d.update(extra=1),
    "extra record key": _tamper_record("surprise", True),
    "score off the scale": _tamper_record("judge", 99),
    "human off the scale": _tamper_record("human", 0),
    "human not the labels'": _tamper_record("human", 2),
    "wrong type": _tamper_record("judge", "3"),
    "bool as int": _tamper_record("fold", True),
    "negative cost": lambda d: d["cost"].update(judge_calls=-1),
    "missing key": lambda d: d.pop("cost"),
    "dropped record": lambda d: d["records"].pop(),
    "duplicated record": lambda d: d["records"].append(dict(d["records"][0])),
    "records as a dict": lambda d: d.update(records={}),
    "failed with a score": lambda d: d["records"][0].update(failed=True, judge=3),
    "top level a list": None,
    "not JSON": None,
    "deeply nested": None,
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One finished baseline run's checkpoints (copied by each tampering case)."""
    from judgealign.signatures.rubric import rubric_from_dict
    from judgealign.testing import TINY_RUBRIC

    directory = tmp_path_factory.mktemp("pristine")
    labels = banana_labels(rubric_from_dict(TINY_RUBRIC), 6)
    first = run(rubric_from_dict(TINY_RUBRIC), labels, variants=("baseline",), folds=2,
                checkpoint_dir=directory)
    return directory, labels, [r.to_dict() for r in first.records]


@pytest.mark.parametrize("case", list(TAMPERINGS))
def test_a_tampered_checkpoint_is_recomputed_with_a_warning(tiny_rubric, tmp_path, case,
                                                            pristine):
    import shutil

    shutil.copytree(pristine[0], tmp_path, dirs_exist_ok=True)
    labels, first_records = pristine[1], pristine[2]
    path = tmp_path / "folds" / "fold0-baseline.json"
    data = json.loads(path.read_text())
    if case == "top level a list":
        path.write_text("[]")
    elif case == "not JSON":
        path.write_bytes(b"\xe9{not json")
    elif case == "deeply nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    else:
        TAMPERINGS[case](data)
        path.write_text(json.dumps(data))
    again = lms()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from judgealign.evaluation.crossval import cross_validate
        from judgealign.evaluation.options import CVOptions

        second = cross_validate(tiny_rubric, labels, Settings(),
                                CVOptions(variants=("baseline",), folds=2, n_bootstrap=300,
                                          progress=False, checkpoint_dir=tmp_path, resume=True),
                                lm=again[0], reflection_lm=again[1])
    ours = [w for w in caught if issubclass(w.category, CheckpointWarning)]
    assert len(ours) == 1 and "fold0-baseline.json is invalid" in str(ours[0].message)
    assert again[0].engine.calls == 3 * 2  # fold 0 recomputed (3 items x 2 dims), fold 1 reused
    assert [r.to_dict() for r in second.records] == first_records
    # ... and the file was rewritten valid: the next resume reuses everything silently.
    third = lms()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        run(tiny_rubric, labels, lms=third, variants=("baseline",), folds=2,
            checkpoint_dir=tmp_path, resume=True)
    assert third[0].engine.calls == 0


def test_lm_fingerprint_keeps_api_base_and_drops_secrets():
    import dspy

    a = dspy.LM("openai/m", api_base="http://127.0.0.1:8000/v1", api_key="sk-secret-1")
    b = dspy.LM("openai/m", api_base="http://127.0.0.1:9000/v1", api_key="sk-secret-1")
    c = dspy.LM("openai/m", api_base="http://127.0.0.1:8000/v1", api_key="sk-other-2")
    d = dspy.LM("openai/m", api_base="http://127.0.0.1:8000/v1", api_key="sk-secret-1",
                temperature=0.7)
    assert lm_fingerprint(a) != lm_fingerprint(b)  # another server: other answers
    assert lm_fingerprint(a) == lm_fingerprint(c)  # another key: same answers
    assert lm_fingerprint(a) != lm_fingerprint(d)  # decoding parameters count
    assert "sk-secret" not in json.dumps(lm_fingerprint(a))
    assert lm_fingerprint(a)["kwargs"]["api_base"] == "http://127.0.0.1:8000/v1"


def test_changing_api_base_or_settings_invalidates_checkpoints(tiny_rubric, tmp_path):
    from judgealign.evaluation.checkpoints import fingerprint

    run_info = {"rubric_sha256": "r", "labels_sha256": "l", "dimensions": ["d"], "seed": 0,
                "folds": {"a": 0}, "reflection_lm": None, "embedder": None, "versions": {}}
    import dspy

    base = variant_settings_fingerprint(Settings(), "memalign")
    keys = {fingerprint({**run_info, "lm": lm_fingerprint(dspy.LM("openai/m", api_base=url))},
                        variant="memalign", fold=0, variant_settings=base)
            for url in ("http://a/v1", "http://b/v1")}
    assert len(keys) == 2
    # Every settings field that shapes alignment is in the fingerprint; tracking is not.
    assert base != variant_settings_fingerprint(
        Settings(memory=MemorySettings(
            validate_guidelines=not MemorySettings().validate_guidelines)), "memalign")
    assert "tracking" not in base
    assert base != variant_settings_fingerprint(Settings(), "episodic-only")

    # End to end: a tracking change reuses everything; a memory setting recomputes memalign.
    labels = banana_labels(tiny_rubric, 6)
    run(tiny_rubric, labels, folds=2, checkpoint_dir=tmp_path)
    same = run(tiny_rubric, labels, Settings(tracking=TrackingSettings(experiment="other")),
               folds=2, checkpoint_dir=tmp_path, resume=True)
    assert all(c.reused for c in same.costs)
    other = run(tiny_rubric, labels, Settings(memory=MemorySettings(max_guidelines=2)),
                folds=2, checkpoint_dir=tmp_path, resume=True)
    assert {(c.fold, c.variant) for c in other.costs if not c.reused} >= {(0, "memalign"),
                                                                         (1, "memalign")}
