"""The embedded engine's pure parts (no model needed): JSON mending and schema shaping."""

from __future__ import annotations

import json

import pytest

from judgealign.local_lm import bound_schema, close_json


@pytest.mark.parametrize("cut,expected", [
    ('{"score": "2", "rationale": "cell 3 fits', {"score": "2", "rationale": "cell 3 fits"}),
    ('{"guidelines": [{"text": "Check the split", "sources": ["E1", "E',
     {"guidelines": [{"text": "Check the split", "sources": ["E1", "E"]}]}),
    ('{"score": "N/A", "rationale": "a \\"quoted', {"score": "N/A", "rationale": 'a "quoted'}),
    ('{"score": "1",', {"score": "1"}),
])
def test_truncated_json_is_closed(cut, expected):
    assert json.loads(close_json(cut)) == expected


def test_whole_or_hopeless_text_is_left_alone():
    assert close_json('{"a": 1}') == '{"a": 1}'
    assert close_json("not json at all") == "not json at all"


def test_schema_drops_string_lengths_and_bounds_arrays():
    schema = {"type": "object", "properties": {
        "text": {"type": "string", "maxLength": 300},
        "score": {"type": "string", "enum": ["1", "2"]},
        "items": {"type": "array", "items": {"type": "string", "maxLength": 8}}}}
    out = bound_schema(schema)
    assert "maxLength" not in out["properties"]["text"]
    assert "maxLength" not in out["properties"]["items"]["items"]
    assert out["properties"]["items"]["maxItems"] == 5
    assert out["properties"]["score"]["enum"] == ["1", "2"]
