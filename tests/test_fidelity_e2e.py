"""Issue 9 end to end: `chunkwise run` against a simulator that behaves like a real Ollama where the
client used to go wrong -- a server that fails every request the same way (before the first token or
inside a 200 stream), thinking models, dense text in conversation mode, a context that fills during
the answer, and version signals. The simulator cites the Ollama source it imitates (chunkwise/harness/sim/).
"""

from __future__ import annotations

import polars as pl
import pytest

from chunkwise.cli import main as cli_main
from chunkwise.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from chunkwise.harness.sim.fingerprint import chat_fingerprint
from chunkwise.store.files import read_json
from tests.support.pipeline_helpers import write_requests
from tests.support.run_checks import assert_answered_once

pytestmark = pytest.mark.usefixtures("prefect_harness", "clean_process")


def run(sim, source, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(tmp_path / "runs"), "--run-name",
            "t", "--chunk-size", "8", "--num-ctx", "2048", *extra]
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def results(tmp_path) -> tuple[pl.DataFrame, dict]:
    run_dir = tmp_path / "runs" / "t"
    return pl.read_parquet(run_dir / "results.parquet"), read_json(run_dir / "stats.json")


def chat_statuses(sim) -> dict[str, int]:
    return sim.stats(fingerprints=False)["requests"].get("/api/chat", {})


def empty_chat_fingerprint(model: str = "llama3.1:8b") -> str:
    """The fingerprint of the run's model load (a chat without messages)."""
    return chat_fingerprint(model, [])


def test_a_model_that_cannot_load_stops_the_run_before_any_row_is_sent(sim_factory, tmp_path, capsys):
    """The run loads the model before its first row (an empty-messages chat, done_reason "load"): a model that
    cannot load stops it there with the server's message (exit 2), and nothing of the input was sent."""
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=8)
    sim = sim_factory(answer_tokens=(8, 16), load_failure="load")
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent")
    assert code == EXIT_CONFIG, out
    assert "could not load" in out and "error loading model" in out and "resume" in out
    fingerprints = sim.stats()["fingerprints"]
    assert set(fingerprints) == {empty_chat_fingerprint()}, fingerprints  # only the load was asked for
    sim.configure(load_failure="none")
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent")
    assert code == EXIT_OK, out
    assert_answered_once(sim.stats(), expected=24)  # a load request is not an answer


def test_a_server_failing_every_request_the_same_way_stops_the_run_and_a_resume_finishes_it(
        sim_factory, tmp_path, capsys):
    """A runner that crashes after the first tokens of every answer (an error line inside a 200 stream): rows are
    recorded failed after their attempts until the same error has hit three different rows in a row; then the
    run stops with the server's message (exit 2), not 24 rows x 6 attempts. One slot (the default of 4 would
    trip at 3 + 4 - 1 rows, chunkwise.run.breaker); rows of several chunks are still in flight together, so
    the third row may come before the first has used its two attempts."""
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=8)
    sim = sim_factory(answer_tokens=(8, 16), stream_error_rate=1.0)
    argv = ("--mode", "independent", "--breaker-threshold", "3", "--max-attempts", "2", "--parallel", "1")
    code, out = run(sim, source, tmp_path, capsys, *argv)
    assert code == EXIT_CONFIG, out
    assert "3 different rows in a row failed the same way" in out and "resume" in out
    assert 3 <= sim.stats(fingerprints=False)["faults"]["stream_error"] <= 2 + 2 + 1
    sim.configure(stream_error_rate=0.0)
    code, out = run(sim, source, tmp_path, capsys, *argv)
    table, _stats = results(tmp_path)
    failed = table.filter(pl.col("status") == "failed")
    assert code == (EXIT_FAILED if failed.height else EXIT_OK), out  # rows recorded failed before the stop stay
    assert failed.height <= 2 and (failed["error_class"] == "transient").all()
    assert table.height == 24 and table.filter(pl.col("status") == "ok").height == 24 - failed.height
    code, out = run(sim, source, tmp_path, capsys, *argv, "--retry-failed")
    assert code == EXIT_OK, out
    table, _stats = results(tmp_path)
    assert table["status"].to_list() == ["ok"] * 24
    assert_answered_once(sim.stats(), expected=24)


def test_a_thinking_model_is_told_not_to_think_unless_asked(sim_factory, tmp_path, capsys):
    source = write_requests(tmp_path / "in.parquet", 8, prompt_words=8)
    sim = sim_factory(answer_tokens=(8, 16), thinking_tokens=(200, 400))
    code, out = run(sim, source, tmp_path, capsys, "--model", "qwen3:8b", "--num-predict", "128")
    assert code == EXIT_OK, out  # without think: false the 200-400 thinking tokens would exhaust num_predict
    table, stats = results(tmp_path)
    assert table["thinking"].null_count() == 8 and stats["tokens"]["thinking_tokens_estimated"] == 0


def test_think_on_keeps_the_trace_in_its_own_column_and_counts_it(sim_factory, tmp_path, capsys):
    source = write_requests(tmp_path / "in.parquet", 8, prompt_words=8)
    sim = sim_factory(answer_tokens=(8, 16), thinking_tokens=(20, 40))
    code, out = run(sim, source, tmp_path, capsys, "--model", "qwen3:8b", "--think", "on", "--num-predict", "256")
    assert code == EXIT_OK, out
    table, stats = results(tmp_path)
    assert table["thinking"].str.len_chars().min() > 0 and table["response"].str.len_chars().min() > 0
    assert stats["tokens"]["thinking_tokens_estimated"] > 0 and stats["tokens"]["answers_with_thinking"] == 8


def test_think_on_a_model_that_cannot_think_is_refused_before_anything_is_sent(sim_factory, tmp_path, capsys):
    source = write_requests(tmp_path / "in.parquet", 8, prompt_words=8)
    sim = sim_factory()
    code, out = run(sim, source, tmp_path, capsys, "--model", "llama3.1:8b", "--think", "on")
    assert code == EXIT_CONFIG and "cannot think" in out and len(out.strip().splitlines()) <= 3, out
    assert chat_statuses(sim) == {}


def code_like(n: int) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(n)), "prompt": [
        f"def handler_{i}(req):\n"
        f"    return {{'id': {i * 7919}, 'k': req.get('k_{i}', [{i}, {i + 1}])}}  # {i:06x}\n" * 6
        for i in range(n)]})


def test_dense_text_in_conversation_mode_answers_every_request(sim_factory, tmp_path, capsys):
    """Real BPE packs code denser than the client's 4 characters per token: trimming follows the
    server's counts, and an overflow gets one harder-trimmed retry at most."""
    source = tmp_path / "code.parquet"
    code_like(40).write_parquet(source)
    sim = sim_factory(token_density=1.5, answer_tokens=(40, 80))
    code, out = run(sim, source, tmp_path, capsys, "--mode", "conversation", "--chunk-size", "40",
                    "--num-predict", "128")
    assert code == EXIT_OK, out
    table, stats = results(tmp_path)
    assert table["status"].to_list() == ["ok"] * 40
    assert table["context_retries"].max() <= 1
    assert stats["retries"]["conversation_turns_retried_after_trimming"] == table["context_retries"].sum()


def test_an_answer_that_would_need_a_context_shift_is_context_truncated(sim_factory, tmp_path, capsys):
    """shift: false: the answer stops when the context is full (done_reason length before num_predict)
    instead of silently dropping half of the context."""
    prompts = ["short question"] * 4 + [" ".join(["x"] * 1900)]
    source = tmp_path / "in.parquet"
    pl.DataFrame({"id": list(range(5)), "prompt": prompts}).write_parquet(source)
    sim = sim_factory(answer_tokens=(300, 300))
    _code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--num-predict", "400")
    table, _ = results(tmp_path)
    last = table.row(4, named=True)
    assert (last["status"], last["error_class"]) == ("failed", "context_truncated"), out
    assert "context filled during the answer" in last["error_message"]
    assert table["status"].to_list()[:4] == ["ok"] * 4


@pytest.mark.parametrize("version", ["0.0.0", "0.12.6", "0.33.0-rc2"])
def test_truncate_false_reaches_every_server_that_honours_it(sim_factory, tmp_path, capsys, version):
    """A source build reports 0.0.0: an over-long prompt must still be refused, never cut."""
    prompts = ["short"] * 3 + [" ".join(["word"] * 3000)]
    source = tmp_path / "in.parquet"
    pl.DataFrame({"id": list(range(4)), "prompt": prompts}).write_parquet(source)
    sim = sim_factory(ollama_version=version, answer_tokens=(4, 8))
    _code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--num-predict", "32")
    table, _ = results(tmp_path)
    last = table.row(3, named=True)
    assert last["error_class"] == "context_truncated" and last["prompt_eval_count"] is None, out


def test_ollama_0_30_0_is_refused_with_a_message(sim_factory, tmp_path, capsys):
    source = write_requests(tmp_path / "in.parquet", 4, prompt_words=8)
    sim = sim_factory(ollama_version="0.30.0")
    code, out = run(sim, source, tmp_path, capsys)
    assert code == EXIT_CONFIG and "0.30.1" in out, out
    assert chat_statuses(sim) == {}
