"""Deterministic answers: text, length, num_predict, stop, and JSON for `format`."""

from __future__ import annotations

import json
import random

import httpx
import jsonschema
import pytest

from chunkwise.harness.sim.answer import make_answer, stream_lines
from chunkwise.harness.sim.request import CompletionRequest
from chunkwise.harness.sim.textgen import CORPUS, schema_value
from chunkwise.harness.sim.tokenizer import count_tokens, tokenize

MSGS = [{"role": "user", "content": "Summarise the report."}]


def chat(url: str, messages=MSGS, **extra) -> dict:
    body = {"model": "llama3.1:8b", "messages": messages, "stream": False, **extra}
    r = httpx.post(f"{url}/api/chat", json=body, timeout=30, trust_env=False)
    assert r.status_code == 200, r.text
    return r.json()


def validate(value, schema) -> None:
    """Raise when `value` breaks `schema` (draft 2020-12, the checker the client uses on answers)."""
    jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)


TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "other"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
        "owner": {"$ref": "#/$defs/Person"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
        "kind": {"const": "ticket"},
    },
    "required": ["category", "priority", "confidence", "urgent", "tags", "owner", "note", "score", "kind"],
    "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string", "minLength": 3},
                                                           "age": {"type": ["integer", "null"], "minimum": 18}},
                         "required": ["name", "age"]}},
}


def test_same_inputs_same_answer_and_seed_or_temperature_change_it(sim):
    a, b = chat(sim.url), chat(sim.url)
    assert a["message"] == b["message"] and a["eval_count"] == b["eval_count"]
    assert chat(sim.url, options={"seed": 7})["message"] != a["message"]
    assert chat(sim.url, options={"temperature": 0})["message"] != a["message"]
    assert chat(sim.url, options={"seed": 7})["message"] == chat(sim.url, options={"seed": 7})["message"]
    other = chat(sim.url, [{"role": "user", "content": "Summarise the other report."}])
    assert other["message"] != a["message"]
    # options that do not drive the output leave it alone
    assert chat(sim.url, options={"num_ctx": 8192})["message"] == a["message"]


def test_answers_have_natural_lengths_in_range_and_eval_count_is_token_count(sim):
    lengths = []
    for i in range(40):
        body = chat(sim.url, [{"role": "user", "content": f"question {i}"}])
        text = body["message"]["content"]
        assert body["eval_count"] == count_tokens(text) and body["done_reason"] == "stop"
        assert text[0].isupper() and not text[0].isspace()
        lengths.append(body["eval_count"])
    assert min(lengths) >= 16 and max(lengths) <= 256 and len(set(lengths)) > 20
    sim.configure(answer_tokens=(3, 5))
    assert 3 <= chat(sim.url)["eval_count"] <= 5


def test_corpus_windows_retokenize_exactly():
    assert tokenize("".join(CORPUS)) == CORPUS
    rng = random.Random(5)
    for _ in range(200):
        a = rng.randrange(len(CORPUS) - 300)
        window = CORPUS[a : a + rng.randint(1, 300)]
        assert tokenize("".join(window)) == window


def test_num_predict_cuts_with_done_reason_length(sim):
    full = chat(sim.url)
    cut = chat(sim.url, options={"num_predict": 5})
    assert cut["eval_count"] == 5 and cut["done_reason"] == "length"
    assert full["message"]["content"].startswith(cut["message"]["content"])
    roomy = chat(sim.url, options={"num_predict": 10_000})
    assert roomy["done_reason"] == "stop" and roomy["message"] == full["message"]
    assert chat(sim.url, options={"num_predict": -1})["message"] == full["message"]


def test_unbounded_answers_are_capped_at_ten_times_num_ctx(sim_factory):
    sim = sim_factory(answer_tokens=(500, 500))
    body = chat(sim.url, options={"num_ctx": 40})
    assert body["eval_count"] == 400 and body["done_reason"] == "length"
    body = chat(sim.url, options={"num_ctx": 40}, shift=False)
    assert body["eval_count"] == 40 - body["prompt_eval_count"] and body["done_reason"] == "length"


def test_stop_strings_end_the_answer(sim):
    full = chat(sim.url)["message"]["content"]
    word = full.split()[3]
    cut = chat(sim.url, options={"stop": [word]})
    assert cut["done_reason"] == "stop" and cut["message"]["content"] == full[: full.index(word)]
    assert cut["eval_count"] == count_tokens(cut["message"]["content"])


def test_format_json_gives_an_object(sim):
    body = chat(sim.url, format="json")
    value = json.loads(body["message"]["content"])
    assert isinstance(value, dict) and 2 <= len(value) <= 4
    assert body["eval_count"] == count_tokens(body["message"]["content"])


def test_format_schema_gives_valid_values(sim):
    for i in range(25):
        body = chat(sim.url, [{"role": "user", "content": f"ticket {i}"}], format=TICKET_SCHEMA)
        value = json.loads(body["message"]["content"])
        validate(value, TICKET_SCHEMA)
    streamed = httpx.post(f"{sim.url}/api/generate", trust_env=False, json={
        "model": "qwen2.5:7b", "prompt": "list", "format": {"type": "array", "items": {"type": "number", "minimum": 5,
                                                                                         "maximum": 6}, "minItems": 4}})
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    value = json.loads("".join(line["response"] for line in lines))
    validate(value, {"type": "array", "items": {"type": "number", "minimum": 5, "maximum": 6}, "minItems": 4})


def test_schema_value_covers_keywords_directly():
    rng = random.Random(1)
    schemas = [
        {"type": "string", "enum": ["a", "b"]},
        {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5},
        {"type": "number", "minimum": 2.5, "maximum": 2.5},
        {"type": "array", "items": {"type": "boolean"}, "minItems": 0, "maxItems": 0},
        {"type": "object", "properties": {"deep": {"type": "object", "properties": {"x": {"type": "null"}}}}},
        {"type": "string", "maxLength": 4},
        {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"required": ["a"]}]},
        {"type": "integer", "minimum": -3, "maximum": -3},
    ]
    for schema in schemas:
        for _ in range(20):
            validate(schema_value(schema, rng), schema)
    assert schema_value({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5}, rng) == 4


def test_num_predict_cutting_json_leaves_invalid_json(sim):
    body = chat(sim.url, format=TICKET_SCHEMA, options={"num_predict": 6})
    assert body["done_reason"] == "length" and body["eval_count"] == 6
    with pytest.raises(json.JSONDecodeError):
        json.loads(body["message"]["content"])


def test_make_answer_is_pure():
    req = CompletionRequest(kind="chat", model="m", body={}, fingerprint="f" * 32)
    one = make_answer(req, (16, 256), 4096, 10)
    assert make_answer(req, (16, 256), 4096, 10) == one and 16 <= len(one.tokens) <= 256


def test_stream_lines_are_one_json_object_per_piece_in_ollama_field_order():
    """The NDJSON lines are assembled by joining (not per-piece json.dumps); each must be exactly the
    object Ollama streams, whatever the piece holds (quotes, backslashes, U+2028, NUL, CJK, empty)."""
    pieces = ["Hello", ' "quoted"', "\\", "\n", "\u2028", "\x00", " \u4e2d", ""]
    for kind, thinking in (("chat", False), ("chat", True), ("generate", False), ("generate", True)):
        req = CompletionRequest(kind=kind, model="llama3.1:8b", body={}, fingerprint="f")
        data = stream_lines(req, pieces, "2026-11-27T00:00:00.000000001Z", thinking)
        lines = data.decode("utf-8").split("\n")
        assert lines[-1] == "" and len(lines) == len(pieces) + 1
        for line, piece in zip(lines, pieces, strict=False):
            if kind == "chat":
                message = {"role": "assistant", "content": "", "thinking": piece} if thinking else {
                    "role": "assistant", "content": piece}
                expected = {"model": "llama3.1:8b", "created_at": "2026-11-27T00:00:00.000000001Z",
                            "message": message, "done": False}
            else:
                expected = {"model": "llama3.1:8b", "created_at": "2026-11-27T00:00:00.000000001Z",
                            **({"response": "", "thinking": piece} if thinking else {"response": piece}),
                            "done": False}
            parsed = json.loads(line)
            assert parsed == expected and list(parsed) == list(expected)
    assert stream_lines(CompletionRequest(kind="chat", model="m", body={}, fingerprint="f"), [], "t") == b""
