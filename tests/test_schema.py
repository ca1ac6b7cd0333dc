"""The structured-output checker behind the invalid_output failure class."""

import pytest
from pydantic import ValidationError

from chunkwise.params import RunParams
from chunkwise.run.structured import check_answer
from chunkwise.schemas import schema_problem

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


def test_each_violation_is_reported_with_its_path():
    assert "not valid JSON" in check_answer('{"label": "spam", "sco', SCHEMA)
    assert check_answer('{"label": "spam"}', SCHEMA) == "$: 'score' is a required property"
    assert check_answer('{"label": "eggs", "score": 0.1}', SCHEMA) == "$.label: 'eggs' is not one of ['spam', 'ham']"
    assert check_answer('{"label": "ham", "score": 2}', SCHEMA) == "$.score: 2 is greater than the maximum of 1"
    assert check_answer('{"label": "ham", "score": 0, "tags": ["a","b","c"]}', SCHEMA).startswith("$.tags: ")
    assert check_answer('{"label": "ham", "score": 0, "n": 1.5}', SCHEMA) == "$.n: 1.5 is not of type 'integer'"
    assert "('x' was unexpected)" in check_answer('{"label": "ham", "score": 0, "x": 1}', SCHEMA)
    assert check_answer('{"label": "ham", "score": 0, "n": true}', SCHEMA) == "$.n: True is not of type 'integer'"


def test_at_most_three_problems_in_path_order():
    answer = '{"label": "eggs", "score": 2, "tags": [1], "n": "x", "x": 0}'
    problems = check_answer(answer, SCHEMA).split("; ")
    assert [p.split(":")[0] for p in problems] == ["$", "$.label", "$.n"]


def test_keywords_ollama_may_not_enforce_still_count():
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    assert check_answer('{"id": "ABC"}', schema) is None
    assert check_answer('{"id": "abcd"}', schema) == "$.id: 'abcd' does not match '^[A-Z]{3}$'"


def test_a_broken_schema_is_named():
    assert schema_problem(SCHEMA) is None
    assert schema_problem({"type": "str"}).startswith("$.type: 'str' is not valid")
    problem = schema_problem({"properties": {"a": {"minimum": "one"}}})
    assert problem == "$.properties.a.minimum: 'one' is not of type 'number'"


def test_plain_json_format_accepts_any_json():
    assert check_answer("[1, 2]", "json") is None
    assert check_answer("nope", "json") is not None


def test_run_parameters_refuse_a_broken_schema():
    with pytest.raises(ValidationError, match=r"format is not a valid JSON schema \(\$\.type: 'str' is not valid"):
        RunParams(input_path="in.parquet", format={"type": "str"})
    assert RunParams(input_path="in.parquet", format=SCHEMA).format == SCHEMA
