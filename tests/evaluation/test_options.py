"""Tests of judgealign.evaluation.options: every bad option is refused, with a message naming
it, before anything is built or any LM is called."""

from __future__ import annotations

from pathlib import Path

import pytest
from cv_cases import banana_labels, lms

from judgealign.config import Settings
from judgealign.errors import JudgeAlignError
from judgealign.evaluation.crossval import cross_validate
from judgealign.evaluation.options import REFERENCES, CVOptions, CVOptionsError


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"folds": 1}, r"folds must be >= 2, got 1 \(--folds\)"),
    ({"folds": 0}, r"folds must be >= 2"),
    ({"folds": "4"}, r"folds must be an integer"),
    ({"n_bootstrap": 0}, r"n_bootstrap must be >= 1, got 0 \(--bootstrap\)"),
    ({"n_bootstrap": -5}, r"n_bootstrap must be >= 1"),
    ({"limit": 0}, r"limit must be >= 1"),
    ({"limit": 3, "folds": 4}, r"limit = 3 leaves fewer items than the 4 folds"),
    ({"variants": ("baseline", "bogus")}, r"unknown variant\(s\) 'bogus' \(--variants\)"),
    ({"variants": ("human",)}, r"'human' is not a variant"),
    ({"references": ("median",)}, r"unknown reference predictor 'median'"),
    ({"variants": (), "references": ()}, r"nothing to evaluate"),
    ({"confidence": 1.0}, r"confidence must be strictly between 0 and 1"),
    ({"resume": "yes"}, r"resume must be True or False"),
    ({"dimensions": ("",)}, r"dimensions: '' is not a name"),
])
def test_bad_options_are_refused_with_a_message_naming_them(kwargs, pattern):
    with pytest.raises(CVOptionsError, match=pattern):
        CVOptions(**kwargs)


def test_options_errors_are_judgealign_errors_and_value_errors():
    with pytest.raises(JudgeAlignError):
        CVOptions(folds=1)
    with pytest.raises(ValueError):
        CVOptions(folds=1)
    with pytest.raises(CVOptionsError, match="unknown cross-validation option"):
        CVOptions.from_kwargs(fold=3)


def test_checkpoint_dir_naming_an_existing_file_is_refused(tmp_path):
    existing = tmp_path / "report.md"
    existing.write_text("x")
    with pytest.raises(CVOptionsError, match="is an existing file"):
        CVOptions(checkpoint_dir=existing)
    with pytest.raises(CVOptionsError, match="is an existing file"):
        CVOptions(checkpoint_dir=existing / "below")
    assert CVOptions(checkpoint_dir=str(tmp_path / "new")).checkpoint_dir == tmp_path / "new"


def test_names_are_normalised_and_reference_names_become_references():
    opts = CVOptions(variants="baseline, memalign,constant,baseline", references=())
    assert opts.variants == ("baseline", "memalign") and opts.references == ("constant",)
    assert CVOptions().references == REFERENCES and CVOptions().variants == ("baseline",
                                                                              "memalign")
    only_refs = CVOptions(variants=())
    assert only_refs.variants == () and only_refs.references == REFERENCES


def test_data_checks_happen_before_any_lm_call_or_build(tiny_rubric, tmp_path):
    labels = banana_labels(tiny_rubric, 6)
    judge_lm, reflect_lm = lms()
    # An [lm] that cannot even be built: if cross_validate built anything first, this would
    # be the error instead of the option's.
    settings = Settings.model_validate({"lm": {"model": "openai/x", "api_key_env": "NOPE_X"}})
    with pytest.raises(CVOptionsError, match="7 folds need at least 7 distinct items, got 6"):
        cross_validate(tiny_rubric, labels, settings, CVOptions(folds=7, progress=False))
    with pytest.raises(CVOptionsError, match="7 folds need at least 7"):
        cross_validate(tiny_rubric, labels, settings, CVOptions(folds=7, progress=False),
                       lm=judge_lm, reflection_lm=reflect_lm)
    assert judge_lm.engine.calls == 0 and reflect_lm.engine.calls == 0
    assert not list(Path(tmp_path).iterdir())  # nothing written either


def test_legacy_keywords_still_work_and_conflicts_are_refused(tiny_rubric):
    labels = banana_labels(tiny_rubric, 6)
    judge_lm, _ = lms()
    result = cross_validate(tiny_rubric, labels, Settings(), variants=("baseline",), folds=2,
                            n_bootstrap=50, progress=False, lm=judge_lm)
    assert result.variants == ["baseline"] and result.settings["folds"] == 2
    with pytest.raises(TypeError, match="not both"):
        cross_validate(tiny_rubric, labels, Settings(), CVOptions(), folds=2, lm=judge_lm)
    with pytest.raises(TypeError, match="settings override"):
        cross_validate(tiny_rubric, labels, Settings(), optimizer_factory=lambda v: None,
                       lm=judge_lm)
