from __future__ import annotations

import typing

import pytest
import yaml

from judgealign.errors import RubricError
from judgealign.signatures.rubric import (
    NA,
    build_signature,
    load_builtin,
    load_rubric_file,
    parse_score,
    resolve_rubric,
    rubric_from_dict,
)
from judgealign.testing import TINY_RUBRIC


def _toml(data: dict) -> str:
    lines = [f'name = "{data["name"]}"', f'title = "{data["title"]}"',
             f'description = "{data["description"]}"', f"scale = {data['scale']}"]
    for inp in data["inputs"]:
        lines += ["[[inputs]]"] + [f'{k} = {_v(v)}' for k, v in inp.items()]
    for dim in data["dimensions"]:
        lines += ["[[dimensions]]"] + [f"{k} = {_v(v)}" for k, v in dim.items() if k != "levels"]
        lines += ["[dimensions.levels]"] + [f'{k} = "{v}"' for k, v in dim["levels"].items()]
    return "\n".join(lines) + "\n"


def _v(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"'


def test_signature_from_python_toml_and_yaml_are_the_same(tmp_path, tiny_rubric):
    toml_path = tmp_path / "tiny.toml"
    toml_path.write_text(_toml(TINY_RUBRIC))
    yaml_path = tmp_path / "tiny.yaml"
    yaml_path.write_text(yaml.safe_dump(TINY_RUBRIC))
    from_toml, from_yaml = load_rubric_file(toml_path), load_rubric_file(yaml_path)
    assert from_toml == tiny_rubric == from_yaml
    sigs = [build_signature(r, "clarity") for r in (tiny_rubric, from_toml, from_yaml)]
    assert len({s.instructions for s in sigs}) == 1
    assert all(list(s.input_fields) == ["answer", "question"] for s in sigs)
    assert all(list(s.output_fields) == ["score", "rationale"] for s in sigs)


def test_score_field_is_a_literal_of_levels_with_na_only_where_allowed(tiny_rubric):
    clarity = build_signature(tiny_rubric, "clarity").output_fields["score"].annotation
    correctness = build_signature(tiny_rubric, "correctness").output_fields["score"].annotation
    assert typing.get_args(clarity) == ("1", "2", "3", NA)
    assert typing.get_args(correctness) == ("1", "2", "3")


def test_instructions_hold_every_level(tiny_rubric):
    sig = build_signature(tiny_rubric, "clarity")
    for text in ("confusing", "readable", "crisp", "The answer is empty.", "Clarity"):
        assert text in sig.instructions


@pytest.mark.parametrize("value,expected", [
    (2, 2), ("3", 3), (" 1 ", 1), (2.0, 2), ("N/A", None), ("n/a", None), ("NA", None),
    (None, None)])
def test_parse_score(value, expected):
    assert parse_score(value, scale=[1, 2, 3]) == expected


@pytest.mark.parametrize("value", [4, "4", "two", 2.5, True, [1]])
def test_parse_score_rejects(value):
    with pytest.raises(ValueError):
        parse_score(value, scale=[1, 2, 3])


def test_parse_score_refuses_na_when_not_allowed():
    with pytest.raises(ValueError, match="N/A"):
        parse_score("N/A", allow_na=False)


def test_builtin_ml_notebook_rubric_has_nine_dimensions():
    rubric = load_builtin("ml_notebook")
    assert rubric.dimension_ids == [
        "library_installation", "exploratory_data_analysis", "data_imputation",
        "feature_engineering", "model_training", "model_use", "metrics_evaluation",
        "mlflow_logging", "cell_organization"]
    from judgealign.signatures import ml_notebook

    assert ml_notebook.DataImputation.instructions.startswith(rubric.title)
    assert resolve_rubric("code_usefulness").scale == [0, 1, 2, 3, 4]


def test_unknown_rubric_and_dimension_are_clear(tiny_rubric):
    with pytest.raises(RubricError, match="unknown rubric 'nope'"):
        resolve_rubric("nope")
    with pytest.raises(RubricError, match="no dimension 'style'"):
        tiny_rubric.dimension("style")
    assert tiny_rubric.dimension("Clarity").id == "clarity"


def test_invalid_rubric_names_the_field(tmp_path):
    bad = dict(TINY_RUBRIC, scale=[1, 2])
    with pytest.raises(RubricError, match="describes levels"):
        rubric_from_dict(bad, source="x.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed")
    with pytest.raises(RubricError, match="broken.toml"):
        load_rubric_file(broken)


@pytest.mark.parametrize("value", ["", " ", "none", "null", "n.a.", "not applicable", "-",
                                   "9" * 30])
def test_parse_score_refuses_na_look_alikes_and_giant_numbers(value):
    with pytest.raises(ValueError, match="score must be a level or N/A"):
        parse_score(value, scale=[1, 2, 3])


def test_parse_score_shortens_what_it_quotes():
    with pytest.raises(ValueError) as err:
        parse_score("x" * 10_000)
    assert len(str(err.value)) < 200


@pytest.mark.parametrize("name", ["x" * 300, "a\x00b", "..", "-rf"])
def test_odd_rubric_names_are_unknown_rubrics(name):
    with pytest.raises(RubricError, match="unknown rubric"):
        resolve_rubric(name)


def test_rubric_file_of_another_suffix_or_a_folder(tmp_path):
    other = tmp_path / "rubric.json"
    other.write_text("{}")
    with pytest.raises(RubricError, match="must end in .toml, .yaml or .yml"):
        load_rubric_file(other)
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(RubricError, match="dir.toml is a folder"):
        load_rubric_file(tmp_path / "dir.toml")
