"""The structured-output checker behind the invalid_output failure class."""

from chunkwise.run.structured import check_answer

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "n": {"type": "integer"},
    },
    "required": ["label", "score"],
    "additionalProperties": False,
}


def test_valid_answer_passes():
    assert check_answer('{"label": "spam", "score": 0.5, "tags": ["a"], "n": 3}', SCHEMA) is None


def test_each_violation_is_reported():
    assert "not valid JSON" in check_answer('{"label": "spam", "sco', SCHEMA)
    assert "missing required 'score'" in check_answer('{"label": "spam"}', SCHEMA)
    assert "not one of" in check_answer('{"label": "eggs", "score": 0.1}', SCHEMA)
    assert "breaks maximum" in check_answer('{"label": "ham", "score": 2}', SCHEMA)
    assert "more than 2 items" in check_answer('{"label": "ham", "score": 0, "tags": ["a","b","c"]}', SCHEMA)
    assert "expected integer" in check_answer('{"label": "ham", "score": 0, "n": 1.5}', SCHEMA)
    assert "unexpected property 'x'" in check_answer('{"label": "ham", "score": 0, "x": 1}', SCHEMA)
    assert "expected integer, got bool" in check_answer('{"label": "ham", "score": 0, "n": true}', SCHEMA)


def test_plain_json_format_accepts_any_json():
    assert check_answer("[1, 2]", "json") is None
    assert check_answer("nope", "json") is not None
