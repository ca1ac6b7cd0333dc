"""Each failure class produced on purpose through `chunkwise run`, with its policy, its record in
results.parquet and stats.json, and the exit code:

    output_truncated   done_reason "length": recorded; retried once with 2 x num_predict on request
    invalid_output     answer fails the --format-file schema: re-drawn up to invalid_output_attempts
    context_truncated  a silently cut prompt (old Ollama, per prompt_eval_count) or the 400 of
                       `truncate: false`: recorded, never retried as is
    transient          500s past max_attempts: recorded, the chunk completes, exit 1; then
                       --retry-failed re-sends exactly the failed requests
    fatal              the model vanishes mid-run: the run stops at once with the server's message (exit 2)

Totals always reconcile: total = succeeded + failed + rejected.
"""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from chunkwise.cli import main as cli_main
from chunkwise.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from chunkwise.store.files import read_json
from tests.support.pipeline_helpers import write_requests
from tests.support.run_checks import assert_answered_once, ledger_records

pytestmark = pytest.mark.usefixtures("prefect_harness", "clean_process")

N = 24


def run(sim, source, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(tmp_path / "runs"), "--run-name",
            "t", "--mode", "independent", "--parallel", "2", "--chunk-size", "8", "--num-ctx", "2048", *extra]
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def outcome(tmp_path) -> tuple[pl.DataFrame, dict]:
    run_dir = tmp_path / "runs" / "t"
    return pl.read_parquet(run_dir / "results.parquet"), read_json(run_dir / "stats.json")


def assert_reconciles(results: pl.DataFrame, stats: dict) -> None:
    r = stats["requests"]
    assert r["reconciles"] and r["total"] == results.height == r["succeeded"] + r["failed"] + r["rejected"]
    counted = results.filter(pl.col("status") == "failed").group_by("error_class").len().rows()
    assert {k: v for k, v in r["failed_by_class"].items() if v} == dict(counted)
    assert results["id"].is_unique().all()
    assert stats["throughput"]["active_seconds"] > 0  # a sub-second session still counts (ms timestamps)


@pytest.fixture
def source(tmp_path):
    return write_requests(tmp_path / "in.parquet", N, prompt_words=8)


def test_output_truncated_is_recorded_with_its_text(sim_factory, source, tmp_path, capsys):
    sim = sim_factory(answer_tokens=(20, 20))
    code, out = run(sim, source, tmp_path, capsys, "--num-predict", "8")
    assert code == EXIT_FAILED, out
    results, stats = outcome(tmp_path)
    assert set(results["error_class"]) == {"output_truncated"} and set(results["done_reason"]) == {"length"}
    assert results["attempts"].to_list() == [1] * N
    assert results["eval_count"].to_list() == [8] * N and results["response"].str.len_chars().min() > 0
    assert results["error_message"][0] == (
        "answer stopped at num_predict=8 tokens (done_reason 'length'); raise num_predict"
    )
    assert_reconciles(results, stats)


@pytest.mark.parametrize("answer_tokens, ok", [(12, True), (20, False)])
def test_output_truncated_retried_once_with_twice_num_predict(sim_factory, source, tmp_path, capsys, answer_tokens, ok):
    sim = sim_factory(answer_tokens=(answer_tokens, answer_tokens))
    code, out = run(sim, source, tmp_path, capsys, "--num-predict", "8", "--retry-output-truncated")
    results, stats = outcome(tmp_path)
    assert results["attempts"].to_list() == [2] * N  # once as asked, once with num_predict 16, never more
    if ok:
        assert code == EXIT_OK, out
        assert set(results["status"]) == {"ok"} and results["eval_count"].to_list() == [12] * N
    else:
        assert code == EXIT_FAILED, out
        assert set(results["error_class"]) == {"output_truncated"}
        assert "num_predict=16 tokens" in results["error_message"][0]
    assert_reconciles(results, stats)


def test_invalid_output_is_redrawn_a_bounded_number_of_times(sim_factory, source, tmp_path, capsys):
    # The simulator picks enum values at random; "two" breaks the integer type half of the time.
    schema = {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, "two"]}}, "required": ["n"]}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    sim = sim_factory()
    # At temperature 0 (the default) decoding is greedy and a re-draw with the next seed returns the same
    # answer (ollama/ollama#586); only sampling (temperature > 0) can fix an answer by a re-draw.
    code, out = run(sim, source, tmp_path, capsys, "--format-file", str(tmp_path / "schema.json"),
                    "--invalid-output-attempts", "3", "--temperature", "0.8")
    assert code == EXIT_FAILED, out
    results, stats = outcome(tmp_path)
    ok = results.filter(pl.col("status") == "ok")
    failed = results.filter(pl.col("status") == "failed")
    assert all(json.loads(text) == {"n": 1} for text in ok["response"])
    assert ok["attempts"].max() > 1  # some answers were fixed by a re-draw
    assert failed.height > 0 and set(failed["error_class"]) == {"invalid_output"}
    assert set(failed["attempts"]) == {3}
    assert failed["error_message"][0] == "after 3 attempts: $.n: 'two' is not of type 'integer'"
    assert_reconciles(results, stats)


def long_and_short(tmp_path, n_long: int = 4):
    prompts = ["short question " + str(i) for i in range(8)] + [
        "long " + " ".join(f"word{j}" for j in range(400)) for _ in range(n_long)]
    pl.DataFrame({"id": list(range(len(prompts))), "prompt": prompts}).write_parquet(tmp_path / "mixed.parquet")
    return tmp_path / "mixed.parquet"


@pytest.mark.parametrize("version, truncation, message", [
    ("0.12.0", "keep-tail", "Ollama evaluated 512 prompt tokens but about"),  # cut to exactly num_ctx
    ("0.12.0", "half", "Ollama evaluated 259 prompt tokens but about"),  # about half: 512 - (512 - 5) // 2
    ("0.13.0", "keep-tail", "the input length exceeds the context length; raise num_ctx or shorten the prompt"),
])
def test_context_truncated_is_recorded_and_not_retried(sim_factory, tmp_path, capsys, version, truncation, message):
    sim = sim_factory(ollama_version=version, truncation=truncation, answer_tokens=(4, 8))
    source = long_and_short(tmp_path)
    code, out = run(sim, source, tmp_path, capsys, "--num-ctx", "512", "--num-predict", "32")
    assert code == EXIT_FAILED, out
    results, stats = outcome(tmp_path)
    assert results["status"].to_list() == ["ok"] * 8 + ["failed"] * 4
    failed = results.filter(pl.col("status") == "failed")
    assert set(failed["error_class"]) == {"context_truncated"} and set(failed["attempts"]) == {1}
    assert all(m.startswith(message) for m in failed["error_message"]), failed["error_message"][0]
    assert stats["truncation"]["send_truncate_false"] is True  # sent to every server; older ones ignore it
    assert_reconciles(results, stats)


def test_transient_failures_complete_the_chunk_then_retry_failed_resends_only_them(sim_factory, source, tmp_path,
                                                                                    capsys):
    sim = sim_factory(fail_rate=0.5, seed=3)
    code, out = run(sim, source, tmp_path, capsys, "--max-attempts", "2")
    assert code == EXIT_FAILED, out
    results, stats = outcome(tmp_path)
    failed = results.filter(pl.col("status") == "failed")
    assert 0 < failed.height < N and set(failed["error_class"]) == {"transient"} and set(failed["attempts"]) == {2}
    assert failed["error_message"][0].startswith("gave up after 2 attempts: model runner has unexpectedly stopped")
    assert len(list((tmp_path / "runs" / "t" / "chunks").glob("chunk-*.parquet"))) == 3  # every chunk completed
    assert_reconciles(results, stats)
    before = sim.stats()["fingerprints"]

    sim.configure(fail_rate=0.0)
    code, out = run(sim, source, tmp_path, capsys, "--max-attempts", "2", "--retry-failed")
    assert code == EXIT_OK, out
    after = sim.stats()["fingerprints"]
    resent = {fp for fp in after if after[fp]["received"] > before.get(fp, {"received": 0})["received"]}
    assert len(resent) == failed.height  # exactly the failed ones, each once
    assert all(after[fp]["received"] == before[fp]["received"] + 1 for fp in resent)
    assert_answered_once(sim.stats(), expected=N)
    results, stats = outcome(tmp_path)
    assert set(results["status"]) == {"ok"} and stats["requests"]["succeeded"] == N
    assert_reconciles(results, stats)


def test_fatal_error_mid_run_stops_at_once_with_the_servers_message(sim_factory, source, tmp_path, capsys,
                                                                     monkeypatch):
    from chunkwise.harness.sim import request

    real_resolve = request.resolve
    calls = {"n": 0, "gone": True}

    def resolve(name):  # the model is deleted from the server after 10 chat requests: the run's load and 9 rows
        calls["n"] += 1
        return None if calls["n"] > 10 and calls["gone"] else real_resolve(name)

    monkeypatch.setattr(request, "resolve", resolve)
    sim = sim_factory()
    code, out = run(sim, source, tmp_path, capsys, "--parallel", "1")
    assert code == EXIT_CONFIG, out
    # The final message names the chunk and the input row whose request got the fatal answer.
    stopped = re.search(r"^chunkwise run: run t stopped: chunk-\d{4} \[(\d+)-(\d+)\], input row (\d+): "
                        r"model 'llama3.1:8b' not found \(status 404\); pull it with: ollama pull llama3.1:8b$",
                        out, re.M)
    assert stopped, out
    first, last, row = map(int, stopped.groups())
    assert first <= row <= last
    assert sim.stats()["received_total"] == 11  # nothing was sent after the fatal answer
    records, bad = ledger_records(tmp_path / "runs" / "t")
    assert len(records) == 9 and bad == 0 and {r["status"] for r in records} == {"ok"}
    assert row not in {r["_row"] for r in records}
    assert not (tmp_path / "runs" / "t" / "results.parquet").exists()

    calls["gone"] = False  # pulled again: the run resumes where it stopped
    code, out = run(sim, source, tmp_path, capsys, "--parallel", "1")
    assert code == EXIT_OK, out
    assert_answered_once(sim.stats(), expected=N)


def test_server_busy_503_is_transient_and_retried_until_answered(sim_factory, tmp_path):
    """Ollama answers 503 when its queue is full (research ollama.md section 5): retried, never lost.
    Before v0.11.5 the queue bounded requests for the loaded model too; since then only requests that
    need a (re)load get 503 (v0.33.0-rc2:server/sched.go:197-208), hence the older era here."""
    from tests.support.direct_run import run_all
    from tests.support.pipeline_helpers import params_for

    sim = sim_factory(parallel=1, max_queue=1, decode_tps=2000, answer_tokens=(8, 8),  # one slot, one waiting
                      ollama_version="0.11.4")
    source = write_requests(tmp_path / "in.parquet", 12, prompt_words=4)
    params = params_for(sim, source, tmp_path / "runs", mode="independent", parallel=4, chunk_size=6,
                        max_attempts=50)
    _ctx, _summaries, stats = run_all(params)
    busy = sim.stats()["requests"]["/api/chat"].get("503", 0)
    assert busy > 0  # four in flight against one slot and a queue of one
    assert stats["requests"]["succeeded"] == 12 and stats["retries"]["request_retries"] == busy
    assert_answered_once(sim.stats(), expected=12)


def test_backoff_is_exponential_capped_and_jittered():
    import random

    from chunkwise.run.send import backoff_delay

    random.seed(1)
    for attempt, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 10.0), (30, 10.0)]:
        delays = [backoff_delay(attempt, 0.5, 10.0) for _ in range(200)]
        assert nominal * 0.5 <= min(delays) and max(delays) <= nominal * 1.5  # +-50 % around base x 2^(n-1), capped
        assert max(delays) - min(delays) > nominal * 0.5  # jittered: retries of many requests spread out
