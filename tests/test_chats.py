"""Richer Parquet input (issue 21 item 6): a `messages` column of multi-turn chats besides `prompt`, a row's own
`system`, --id-column / --prompt-column mapping, --limit N; and each batch line's own options on the wire
(item 5)."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from chunkwise.errors import InputError
from chunkwise.inputs.columns import InputColumns
from chunkwise.inputs.scan import validate_only
from chunkwise.inputs.stage import read_requests, stage_input
from chunkwise.params import RunParams
from chunkwise.store.layout import RunPaths
from tests.support.backends import wrap_chat
from tests.support.direct_run import run_all

LIMITS = {"num_ctx": 4096, "num_predict": 64}
CHATS = [
    [{"role": "user", "content": "Capital of France?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Two plus two?"},
     {"role": "assistant", "content": "Four."}, {"role": "user", "content": "And times three?"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],  # ends with the assistant
    [{"role": "tool", "content": "x"}, {"role": "user", "content": "y"}],
    [],
]


def chats_file(path, **extra):
    pl.DataFrame({"key": ["a", "b", "c", "d", "e"], "messages": CHATS, "system": [None, None, None, None, "S"],
                  **extra}).write_parquet(path)
    return path


def test_a_messages_column_is_staged_as_chats(tmp_path):
    source = chats_file(tmp_path / "chats.parquet", topic=[1, 2, 3, 4, 5])
    staged = stage_input(source, tmp_path / "run", **LIMITS, columns=InputColumns(id="key"))
    assert (staged.rows, staged.accepted, staged.rejected, staged.history_rows) == (5, 2, 3, 1)
    assert staged.carried_columns == ("topic",)
    rows = read_requests(staged.requests_path, 0, 2).to_dicts()
    assert [(r["id"], r["prompt"], r["system"]) for r in rows] == [
        ("a", "Capital of France?", None), ("b", "And times three?", "Answer in one word.")]
    assert rows[0]["_history"] is None
    assert rows[1]["_history"] == [{"role": "user", "content": "Two plus two?"},
                                   {"role": "assistant", "content": "Four."}]
    reasons = {r["id"]: r["_reason"] for r in pq.read_table(staged.rejects_path).to_pylist()}
    assert reasons == {
        "c": "the last of messages is not a user turn; end each chat with the user's request",
        "d": "messages[0] has role 'tool'; use one of system, developer, user, assistant",
        "e": "messages is null or empty: give the row its chat or remove it from the input",
    }
    # the same checks without writing anything, and the earlier turns count towards a chat's size
    summary = validate_only(source, **LIMITS, columns=InputColumns(id="key"))
    assert (summary.accepted, summary.rejected, summary.history_rows) == (2, 3, 1)
    assert summary.prompt_chars.to_pylist() == [18, len("And times three?") + len("Two plus two?") + len("Four.")]


def test_column_mapping_and_a_limit(tmp_path):
    source = tmp_path / "docs.parquet"
    pl.DataFrame({"doc_id": [10, 11, 12, 13], "text": ["one", "two", "three", "four"], "lang": ["en"] * 4}
                 ).write_parquet(source)
    staged = stage_input(source, tmp_path / "run", **LIMITS, columns=InputColumns(id="doc_id", prompt="text", limit=3))
    assert (staged.rows, staged.accepted, staged.carried_columns) == (3, 3, ("lang",))
    assert read_requests(staged.requests_path, 0, 3)["prompt"].to_list() == ["one", "two", "three"]
    with pytest.raises(InputError, match=r"no `body` column \(--prompt-column; columns: doc_id, text, lang\); name"):
        validate_only(source, **LIMITS, columns=InputColumns(id="doc_id", prompt="body"))


def test_a_limit_checks_only_the_ids_it_reads(tmp_path):
    source = tmp_path / "dups.parquet"
    pl.DataFrame({"id": [1, 2, 3, 3], "prompt": ["a", "b", "c", "d"]}).write_parquet(source)
    assert validate_only(source, **LIMITS, columns=InputColumns(limit=3)).accepted == 3
    with pytest.raises(InputError, match="duplicated"):
        validate_only(source, **LIMITS)


def test_a_chat_is_sent_with_its_turns_and_a_batch_line_with_its_options(sim, tmp_path, monkeypatch):
    """On the wire: system, earlier turns, the last user turn; a batch line's own options replace the run's."""
    sent = []

    def chat(client, request):
        sent.append(request)
        return client.chat(request)

    wrap_chat(monkeypatch, chat)
    source = chats_file(tmp_path / "chats.parquet")
    params = RunParams(input_path=str(source), id_column="key", host=sim.url, output_dir=str(tmp_path / "runs"),
                       run_name="c", num_ctx=4096, num_predict=64, system_prompt="Run's own.")
    ctx, _, stats = run_all(params)
    assert stats["requests"]["succeeded"] == 2
    by_last = {r.messages[-1]["content"]: r for r in sent}
    assert by_last["Capital of France?"].messages == [{"role": "system", "content": "Run's own."},
                                                      {"role": "user", "content": "Capital of France?"}]
    assert by_last["And times three?"].messages == [
        {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Two plus two?"},
        {"role": "assistant", "content": "Four."}, {"role": "user", "content": "And times three?"}]
    results = pl.read_parquet(ctx.dir / "results.parquet")
    assert results["id"].to_list() == ["a", "b", "c", "d", "e"]
    assert "messages" not in results.columns and "_history" not in results.columns
    assert not RunPaths(ctx.dir).batch_output.exists()  # a Parquet input's run writes no Batch API files

    sent.clear()
    batch = tmp_path / "batch.jsonl"
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "Say hi"}]}
    batch.write_text("\n".join(json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
                                           "body": {**body, **own}})
                               for c, own in (("plain", {}), ("own", {"max_tokens": 9, "temperature": 0.4,
                                                                      "top_p": 0.5, "stop": ["\n\n"], "seed": 7,
                                                                      "response_format": {"type": "json_object"}})))
                     + "\n")
    run_all(RunParams(input_path=str(batch), host=sim.url, output_dir=str(tmp_path / "runs"), run_name="b",
                      num_ctx=4096, num_predict=64, temperature=0.0, seed=1))
    plain, own = sorted(sent, key=lambda r: r.options.max_answer_tokens)[::-1]
    assert (plain.options.max_answer_tokens, plain.options.temperature, plain.options.seed) == (64, 0.0, 1)
    assert (plain.options.top_p, plain.options.stop, plain.format) == (None, None, None)
    assert (own.options.max_answer_tokens, own.options.temperature, own.options.seed) == (9, 0.4, 7)
    assert (own.options.top_p, own.options.stop, own.format) == (0.5, ("\n\n",), "json")
