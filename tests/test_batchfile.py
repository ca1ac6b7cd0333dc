"""OpenAI batch files in: whole-file errors, quarantined lines with their reasons, staging."""

import json

import pyarrow.parquet as pq
import pytest

from chunkwise.errors import InputError
from chunkwise.inputs import scan, stage

RUN = {"model": "gemma3-270m", "num_predict": 16, "temperature": 0.0, "seed": 0, "format": None}


def line(custom_id, prompt="Say hi", system=None, **body):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gemma3-270m", "messages": messages, **body}}


def write(path, *items):
    path.write_text("".join((it if isinstance(it, str) else json.dumps(it)) + "\n" for it in items))
    return path


def test_good_lines_are_staged_with_custom_id_and_system(tmp_path):
    src = write(tmp_path / "b.jsonl", line("a", system="Be brief.", max_tokens=16, temperature=0),
                "", line("b", prompt=[{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]))
    staged = stage.stage_input(src, tmp_path / "run", num_ctx=2048, num_predict=16, run=RUN)
    assert (staged.rows, staged.accepted, staged.rejected) == (2, 2, 0)
    assert staged.fingerprint == stage.fingerprint(src) and staged.path == str(src)
    rows = stage.read_requests(staged.requests_path, 0, 2).to_dicts()
    assert [(r["_row"], r["id"], r["prompt"], r["system"]) for r in rows] == [
        (0, "a", "Say hi", "Be brief."), (1, "b", "Hello", None)]
    assert "_line_error" not in pq.read_schema(staged.requests_path).names
    assert not list((tmp_path / "run").glob(".*tmp*"))  # the converted copy is gone


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({**line("x"), "method": "GET"}, "only POST"),
        ({**line("x"), "url": "/v1/embeddings"}, "only /v1/chat/completions"),
        ({**line("x"), "body": []}, "body is not a JSON object"),
        (line("x", max_tokens=1000), "body.max_tokens is 1000 but the run's num_predict is 16; give --num-predict"),
        (line("x", temperature=0.7), "--temperature"),
        (line("x", seed=3), "--seed"),
        ({**line("x"), "body": {**line("x")["body"], "model": "gpt-4o"}}, "--model"),
        (line("x", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}),
         "--format-file"),
        (line("x", tools=[]), "body.tools is not supported"),
        ({**line("x"), "body": {"model": "gemma3-270m", "messages": [
            {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]}}, "has 3 messages"),
        ({**line("x"), "body": {"model": "gemma3-270m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}}, "not text"),
        (line("x", prompt="   "), "prompt is only whitespace"),
        (line("x", prompt="y" * 30_000), "shorten or split the prompt"),
    ],
)
def test_bad_lines_are_quarantined_with_a_reason(tmp_path, item, reason):
    src = write(tmp_path / "b.jsonl", line("ok"), item)
    staged = stage.stage_input(src, tmp_path / "run", num_ctx=2048, num_predict=16, run=RUN)
    assert (staged.accepted, staged.rejected) == (1, 1)
    rejects = pq.read_table(staged.rejects_path).to_pylist()
    assert [r["id"] for r in rejects] == ["x"] and rejects[0]["_row"] == 1
    assert reason in rejects[0]["_reason"]
    assert rejects[0]["_reason"].startswith("line 2: ") or "prompt" in rejects[0]["_reason"]
    # `chunkwise plan` validates the same way without writing anything
    summary = scan.validate_only(src, num_ctx=2048, num_predict=16, run=RUN)
    assert (summary.accepted, summary.rejected) == (1, 1) and reason in summary.first_rejects[0].reason


def test_matching_schema_is_accepted(tmp_path):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}
    src = write(tmp_path / "b.jsonl", line("a", response_format=rf))
    summary = scan.validate_only(src, num_ctx=2048, num_predict=16, run={**RUN, "format": schema})
    assert summary.accepted == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (["{not json"], "line 1 is not JSON"),
        ([json.dumps({"method": "POST"})], "line 1 has no string `custom_id`"),
        ([json.dumps(line("a")), json.dumps(line("a"))], "custom_id 'a' appears on lines 1 and 2"),
        (["", "  "], "has no request lines"),
    ],
)
def test_whole_file_errors_are_one_line(tmp_path, content, message):
    src = tmp_path / "b.jsonl"
    src.write_text("\n".join(content) + "\n")
    with pytest.raises(InputError, match=message) as info:
        stage.stage_input(src, tmp_path / "run", num_ctx=2048, num_predict=16, run=RUN)
    assert "\n" not in str(info.value) and str(src) in str(info.value)
    assert not (tmp_path / "run" / "requests.parquet").exists()
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_missing_batch_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        scan.validate_only(tmp_path / "none.jsonl", num_ctx=2048, num_predict=16)
