"""OpenAI batch files out: `--output-format openai` writes one line per request, custom_id kept,
split between batch_output.jsonl (answered) and batch_errors.jsonl (everything else). Run without
Prefect against the Ollama simulator: the files are written from results.parquet, whatever the backend."""

import json

import polars as pl
import pytest

from chunkwise.params import RunParams
from chunkwise.results.openai_files import line_for
from chunkwise.run.manifest import differences
from chunkwise.store.layout import RunPaths
from tests.support.direct_run import run_all
from tests.support.openai_batch import check_batch_files


@pytest.fixture(autouse=True)
def _clean_process():
    yield


def batch_line(custom_id, prompt, **body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": prompt}], **body}})


def read_lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_batch_file_in_and_out(sim, tmp_path):
    """A plain Batch API file: each line's own max_tokens and temperature, no option flags. Every line the server
    answered is in the output file with its 200 response (an answer stopped by its max_tokens too, with
    finish_reason "length", flagged output_truncated in results.parquet); lines never sent are in the error file."""
    src = tmp_path / "batch.jsonl"
    good = [batch_line(f"req-{i}", f"Question {i}: say something short", max_tokens=512) for i in range(7)]
    capped = batch_line("capped", "Tell me a long story", max_tokens=2, temperature=0.3)
    bad = [batch_line("blank", "   ")]
    src.write_text("\n".join([*good[:3], capped, *bad, *good[3:]]) + "\n")
    params = RunParams(input_path=str(src), host=sim.url, output_dir=str(tmp_path / "runs"), run_name="b",
                       parallel=2, chunk_size=3)  # a batch file's run writes the batch files without being asked
    ctx, _summaries, stats = run_all(params)
    out, err = read_lines(RunPaths(ctx.dir).batch_output), read_lines(RunPaths(ctx.dir).batch_errors)
    # what a Batch API consumer reads: OpenAI's per-line object, a chat.completion in every 200 response
    check_batch_files(RunPaths(ctx.dir).batch_output, RunPaths(ctx.dir).batch_errors,
                      [f"req-{i}" for i in range(7)] + ["capped", "blank"])
    results = pl.read_parquet(ctx.dir / "results.parquet")
    assert results.height == 9
    answered = results.filter(pl.col("response").is_not_null())
    # exactly one line per request across the two files, custom_id kept, in input order
    assert [x["custom_id"] for x in out] == answered["id"].to_list()
    assert [x["custom_id"] for x in err] == ["blank"]
    assert len({x["id"] for x in out + err}) == 9
    by_id = {r["id"]: r for r in results.iter_rows(named=True)}
    assert (by_id["capped"]["status"], by_id["capped"]["error_class"], by_id["capped"]["eval_count"]) == (
        "failed", "output_truncated", 2)
    assert by_id["capped"]["temperature"] == 0.3  # the line's own
    for item in out:
        assert item["error"] is None and item["response"]["status_code"] == 200
        body = item["response"]["body"]
        row = by_id[item["custom_id"]]
        assert body["object"] == "chat.completion" and body["model"] == ctx.params.model
        assert body["choices"][0]["message"] == {"role": "assistant", "content": row["response"]}
        assert body["choices"][0]["finish_reason"] == row["done_reason"]
        assert body["usage"] == {"prompt_tokens": row["prompt_eval_count"], "completion_tokens": row["eval_count"],
                                 "total_tokens": row["prompt_eval_count"] + row["eval_count"]}
    assert next(x for x in out if x["custom_id"] == "capped")["response"]["body"]["choices"][0]["finish_reason"] == (
        "length")
    for item in err:
        assert item["response"] is None and item["error"]["code"] == "rejected"
        assert "whitespace" in item["error"]["message"]
    assert (stats["requests"]["succeeded"], stats["requests"]["rejected"]) == (7, 1)


def test_an_answer_the_run_paid_for_goes_to_the_output_file_and_none_to_the_error_file():
    row = {"input_row": 4, "id": 17, "status": "failed", "response": "cut sho", "done_reason": "length",
           "prompt_eval_count": 10, "eval_count": 16, "error_class": "output_truncated",
           "error_message": "answer stopped at num_predict=16 tokens"}
    answered, raw = line_for(row, run_name="r", model="m", created=1)
    item = json.loads(raw)
    assert answered and item["custom_id"] == "17" and item["error"] is None
    assert item["response"]["status_code"] == 200
    assert item["response"]["body"]["choices"][0]["finish_reason"] == "length"
    assert item["response"]["body"]["choices"][0]["message"]["content"] == "cut sho"
    no_answer = {**row, "response": None, "error_class": "context_truncated", "done_reason": None,
                 "error_message": "the input length exceeds the context length"}
    answered, raw = line_for(no_answer, run_name="r", model="m", created=1)
    item = json.loads(raw)
    assert not answered and item["response"] is None
    assert item["error"] == {"code": "context_truncated", "message": "the input length exceeds the context length"}


def test_resume_with_another_api_is_refused_and_old_manifests_mean_ollama():
    binding, _ = differences({"api": "ollama"}, {"api": "openai"})
    assert binding == ["api: run has 'ollama', now 'openai'"]
    assert differences({}, {"api": "ollama"})[0] == []
    assert differences({}, {"api": "openai"})[0] == ["api: run has 'ollama', now 'openai'"]
