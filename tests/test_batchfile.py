"""OpenAI batch files in: whole-file errors, quarantined lines with their reasons, staging."""

import json

import pyarrow.parquet as pq
import pytest

from chunkwise.errors import InputError
from chunkwise.inputs import scan, stage
from chunkwise.inputs.columns import InputColumns

RUN = {"model": "gemma3-270m"}


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
        ({**line("x"), "body": {**line("x")["body"], "model": "gpt-4o"}},
         "body.model is 'gpt-4o' but the run's model is 'gemma3-270m'"),
        (line("x", max_tokens=0), "body.max_tokens is 0; give a whole number of tokens"),
        (line("x", temperature=3), "body.temperature is 3; give a number from 0 to 2"),
        (line("x", top_p="high"), "body.top_p is 'high'"),
        (line("x", stop=["a", "b", "c", "d", "e"]), "up to 4 non-empty strings"),
        (line("x", seed=1.5), "body.seed is 1.5"),
        (line("x", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "str"}}}),
         "body.response_format schema is not valid"),
        (line("x", tools=[]), "body.tools is not supported"),
        ({**line("x"), "body": {"model": "gemma3-270m", "messages": [
            {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}},
         "the last message of body.messages is not a user turn"),
        ({**line("x"), "body": {"model": "gemma3-270m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}}, "not text"),
        (line("x", prompt="   "), "prompt is only whitespace"),
        (line("x", prompt="y" * 30_000), "shorten or split the prompt"),
        (line("x", max_tokens=2048), "max_tokens 2048 leaves no room in num_ctx 2048"),
    ],
)
def test_bad_lines_are_quarantined_with_a_reason(tmp_path, item, reason):
    src = write(tmp_path / "b.jsonl", line("ok"), item)
    staged = stage.stage_input(src, tmp_path / "run", num_ctx=2048, num_predict=16, run=RUN)
    assert (staged.accepted, staged.rejected) == (1, 1)
    rejects = pq.read_table(staged.rejects_path).to_pylist()
    assert [r["id"] for r in rejects] == ["x"] and rejects[0]["_row"] == 1
    assert reason in rejects[0]["_reason"]
    assert rejects[0]["_reason"].startswith("line 2: ") or "prompt" in rejects[0]["_reason"] or "max_tokens" in reason
    # `chunkwise plan` validates the same way without writing anything
    summary = scan.validate_only(src, num_ctx=2048, num_predict=16, run=RUN)
    assert (summary.accepted, summary.rejected) == (1, 1) and reason in summary.first_rejects[0].reason


def test_each_line_keeps_its_own_options_and_turns(tmp_path):
    """A Batch API file carries each request's options in its body: they are staged with that request (and
    a multi-turn chat with its earlier turns), whatever the run's own --num-predict, --temperature, --seed."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    chat = [{"role": "developer", "content": "Count."}, {"role": "user", "content": "one"},
            {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"}]
    src = write(tmp_path / "b.jsonl",
                line("a", max_tokens=1000, temperature=0.7, top_p=0.9, stop="END", seed=3),
                line("b", response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}),
                line("c", response_format={"type": "json_object"}, max_completion_tokens=8),
                {**line("d"), "body": {"model": "gemma3-270m", "messages": chat, "n": 1, "stream": False}},
                line("e"))
    staged = stage.stage_input(src, tmp_path / "run", num_ctx=4096, num_predict=16, run=RUN)
    assert (staged.accepted, staged.rejected, staged.history_rows) == (5, 0, 1)
    rows = {r["id"]: r for r in stage.read_requests(staged.requests_path, 0, 5).to_dicts()}
    assert stage.read_request_rows(staged.requests_path, 0, 5) == list(rows.values())  # what a chunk reads
    assert json.loads(rows["a"]["_options"]) == {"num_predict": 1000, "temperature": 0.7, "top_p": 0.9,
                                                 "stop": ["END"], "seed": 3}
    assert json.loads(rows["b"]["_options"]) == {"format": schema}
    assert json.loads(rows["c"]["_options"]) == {"format": "json", "num_predict": 8}
    assert (rows["d"]["system"], rows["d"]["prompt"], rows["d"]["_options"]) == ("Count.", "two", None)
    assert rows["d"]["_history"] == [{"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}]
    assert rows["e"]["_options"] is None and rows["e"]["_history"] is None
    # the chat's earlier turns count towards its size, as they are sent with it
    assert staged.prompt_chars.to_pylist()[3] == len("two") + len("one") + len("1")


def test_a_line_s_own_max_tokens_sets_its_room_in_the_context(tmp_path):
    """The quarantine of over-long requests uses the line's own max_tokens, not the run's num_predict."""
    prompt = "word " * 1200  # 6,000 characters, at least 750 tokens: fits 2048 - 16, not 2048 - 1500
    src = write(tmp_path / "b.jsonl", line("small", prompt=prompt, max_tokens=16),
                line("large", prompt=prompt, max_tokens=1500))
    summary = scan.validate_only(src, num_ctx=2048, num_predict=512, run=RUN)
    assert (summary.accepted, summary.rejected) == (1, 1)
    assert summary.first_rejects[0].id == "large" and "num_predict 1500" in summary.first_rejects[0].reason


def test_a_limit_reads_only_the_first_lines(tmp_path):
    src = write(tmp_path / "b.jsonl", line("a"), line("b"), "{not json")
    summary = scan.validate_only(src, num_ctx=2048, num_predict=16, run=RUN, columns=InputColumns(limit=2))
    assert (summary.rows, summary.accepted) == (2, 2)  # the bad third line is never read


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
