"""Issue 19 end to end against the simulator: the failures real servers produce, each a property of the request
(by fingerprint) or of the server, as Ollama's source and the real Ollama 0.24.0 show them (the simulator cites
both, chunkwise/harness/sim/faults.py): poison rows, repeat aborts, a server that stalls every request, a full
load queue (503), a CPU spill and a server without a GPU, another client reloading the model, and a stop that
prints one line without a traceback. The same behaviours on the real Ollama: tests/test_real_ollama.py.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import polars as pl
import pytest

from chunkwise.cli import main as cli_main
from chunkwise.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from chunkwise.harness.sim.faults import draw
from chunkwise.harness.sim.fingerprint import chat_fingerprint
from chunkwise.store.files import read_json
from tests.support.backends import wrap_chat
from tests.support.pipeline_helpers import write_requests
from tests.support.run_checks import assert_answered_once, chunkwise_env

pytestmark = pytest.mark.usefixtures("prefect_harness", "clean_process")

REPO = Path(__file__).resolve().parents[1]
MODEL = "llama3.1:8b"


def run(sim, source, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(tmp_path / "runs"), "--run-name",
            "t", "--num-ctx", "2048", "--num-predict", "64", "--parallel", "1", *extra]
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def results(tmp_path) -> tuple[pl.DataFrame, dict]:
    run_dir = tmp_path / "runs" / "t"
    return pl.read_parquet(run_dir / "results.parquet"), read_json(run_dir / "stats.json")


def poisoned(prompt: str, seed: int, rate: float) -> bool:
    """Whether the simulator's poison fault hits this row sent on its own (faults.persistent_fault)."""
    fingerprint = chat_fingerprint(MODEL, [{"role": "user", "content": prompt}])
    return draw(seed, f"poison:{fingerprint}", 0) < rate


@pytest.mark.parametrize("mode", ["independent", "conversation"])
def test_poison_rows_are_recorded_with_the_servers_message_the_run_goes_on_and_a_resume_does_not_trip(
        sim_factory, tmp_path, capsys, mode):
    """Rows the server fails every time (a template it cannot render for them, 500): each is recorded failed
    after its own attempts, which never trip the breaker, and every other row is answered. In a conversation the
    poisoned turn is left out of the history, so the turns after it are answered. A resume sends nothing again
    (the failed rows are recorded) and so cannot trip on them."""
    source = write_requests(tmp_path / "in.parquet", 40, prompt_words=6)
    sim = sim_factory(answer_tokens=(8, 16), poison_rate=0.15, seed=6)  # independent: rows 16, 17, 18 and 39
    code, out = run(sim, source, tmp_path, capsys, "--mode", mode, "--chunk-size", "20", "--max-attempts", "3")
    assert code == EXIT_FAILED, out  # finished, with failed rows
    table, _ = results(tmp_path)
    failed = table.filter(pl.col("status") == "failed")
    assert failed.height >= 2, "the seed poisons fewer than two rows; pick another"
    assert (failed["error_class"] == "transient").all() and (failed["attempts"] == 3).all()
    assert failed["error_message"].str.contains("error calling index").all()
    assert table.filter(pl.col("status") == "ok").height == 40 - failed.height
    assert sim.stats(fingerprints=False)["faults"]["poison"] == 3 * failed.height
    if mode == "independent":  # exactly the rows whose own request the server cannot render
        prompts = dict(pl.read_parquet(source).select("id", "prompt").iter_rows())
        assert set(failed["id"]) == {i for i, p in prompts.items() if poisoned(p, 6, 0.15)}
    else:  # a turn after a poisoned one was answered in the same conversation
        rows = table.sort("input_row")["status"].to_list()
        assert any(a == "failed" and b == "ok" for a, b in itertools.pairwise(rows))
    received = sim.stats(fingerprints=False)["received_total"]
    code, out = run(sim, source, tmp_path, capsys, "--mode", mode, "--chunk-size", "20", "--max-attempts", "3")
    assert code == EXIT_FAILED, out
    assert sim.stats(fingerprints=False)["received_total"] == received  # every chunk checkpointed: not even a load
    assert_answered_once(sim.stats(), expected=40 - failed.height)


def test_a_repeat_abort_is_retried_warmer_and_answered(sim_factory, tmp_path, capsys):
    """At temperature 0 a looping request ends without done (31 tokens, Ollama's repeat abort) every time; the
    retry is warmer, and answered."""
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=6)
    sim = sim_factory(answer_tokens=(8, 16), repeat_rate=0.3, seed=1)
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent")
    assert code == EXIT_OK, out
    table, stats = results(tmp_path)
    warmed = table.filter(pl.col("temperature") > 0)
    assert warmed.height == sim.stats(fingerprints=False)["faults"]["repeat"] >= 2
    assert set(warmed["temperature"]) == {0.4} and (warmed["attempts"] == 2).all()
    assert stats["requests"]["failed_by_class"]["incomplete"] == 0


def test_repeat_aborts_nothing_cures_are_recorded_incomplete_and_a_wall_of_them_stops_the_run(
        sim_factory, tmp_path, capsys):
    """Without warmer retries (--invalid-output-attempts 1) every row ends without done: each is recorded
    `incomplete`, and the breaker, which neither resets on them nor ignores them, stops the run after five
    different rows in a row."""
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=6)
    sim = sim_factory(answer_tokens=(8, 16), repeat_rate=1.0)
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--chunk-size", "24",
                    "--invalid-output-attempts", "1")
    assert code == EXIT_CONFIG, out
    assert "5 different rows in a row failed the same way" in out and "without done" in out
    assert sim.stats(fingerprints=False)["faults"]["repeat"] == 5


def test_a_server_that_stalls_every_request_stops_the_run_within_a_few_read_timeouts(sim_factory, tmp_path, capsys):
    """A hung server (every request silent): two rows time out, the run stops (exit 2), having sent at most two
    attempts per row; once the server answers again the resume finishes the run."""
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=6)
    sim = sim_factory(answer_tokens=(8, 16), stall_rate=1.0, stall_s=60)
    with chunkwise_env(read_timeout_s=0.5, retry_base_delay_s=0.05, retry_max_delay_s=0.05):
        code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--chunk-size", "24")
    assert code == EXIT_CONFIG, out
    assert "2 different rows in a row failed the same way" in out and "CHUNKWISE_READ_TIMEOUT_S" in out
    assert sim.stats(fingerprints=False)["faults"]["stall"] <= 2 * 2  # two rows, two timed-out attempts each
    sim.configure(stall_rate=0.0)
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--chunk-size", "24", "--retry-failed")
    assert code == EXIT_OK, out
    assert results(tmp_path)[0]["status"].to_list() == ["ok"] * 24


def test_a_503_from_a_full_load_queue_is_waited_out_not_counted_as_an_attempt(sim_factory, tmp_path, capsys):
    """Another client keeps reloading the model with another num_ctx; chunkwise's requests then need a reload
    too, and with a load queue of 0 (OLLAMA_MAX_QUEUE: only the request the scheduler takes) the second of them is
    answered 503. With one attempt per request, a 503 counted as an attempt would fail the row; as back-pressure
    it is retried until answered."""
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=6)
    sim = sim_factory(answer_tokens=(4, 8), max_queue=0, load_ms=100, parallel=1)
    stop = threading.Event()

    def other_client() -> None:
        """Two chat UIs taking turns, each with its own num_ctx: every one of their requests needs a reload, so
        the scheduler is loading most of the time and a request of the run's almost always meets a full queue
        (at a request every 0.3 s with one num_ctx, a fast run could slip between the loads and see no 503)."""
        with httpx.Client(timeout=30) as client:
            for turn in itertools.count():
                if stop.wait(0.02):
                    return
                body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False,
                        "options": {"num_ctx": 1024 + 512 * (turn % 2), "num_predict": 1}}
                client.post(f"{sim.url}/api/chat", json=body)

    with chunkwise_env(retry_base_delay_s=0.02, retry_max_delay_s=0.1):
        thread = threading.Thread(target=other_client, daemon=True)
        thread.start()
        try:
            code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--parallel", "2",
                            "--max-attempts", "1")
        finally:
            stop.set()
            thread.join()
    busy = sim.stats(fingerprints=False)["requests"]["/api/chat"].get("503", 0)
    assert busy >= 1, "the simulator never answered 503: the test did not fill its load queue"
    assert code == EXIT_OK, out
    table, stats = results(tmp_path)
    assert table["status"].to_list() == ["ok"] * 24
    assert stats["requests"]["failed_by_class"]["transient"] == 0


def test_a_cpu_spill_stops_the_run_before_the_first_row_unless_allowed(sim_factory, tmp_path, capsys):
    """A GPU too small for the model at this num_ctx (the simulator's /api/ps size_vram below size after the
    load): one line, exit 2, before any row is sent; --allow-spill runs it anyway."""
    source = write_requests(tmp_path / "in.parquet", 8, prompt_words=6)
    sim = sim_factory(answer_tokens=(4, 8), vram_mib=2048)
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent")
    assert code == EXIT_CONFIG, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("chunkwise run: ") and "does not fit the GPU" in last and "--allow-spill" in last
    assert sim.stats()["fingerprints"].keys() == {chat_fingerprint(MODEL, [])}  # the load only
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--allow-spill")
    assert code == EXIT_OK, out
    assert results(tmp_path)[1]["model_load"]["preload"]["placement"] == "spill"


def test_a_server_without_a_gpu_is_information_not_a_spill(sim_factory, tmp_path, capsys):
    """size_vram 0 for every model (a CPU-only Ollama): the run goes on, and nothing calls it a spill."""
    source = write_requests(tmp_path / "in.parquet", 8, prompt_words=6)
    sim = sim_factory(answer_tokens=(4, 8), vram_mib=0)
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent")
    assert code == EXIT_OK, out
    stats = results(tmp_path)[1]
    assert stats["model_load"]["preload"]["placement"] == "cpu_only"
    for when in ("start", "after_first_chunk", "end"):
        assert stats["ollama_ps"][when]["cpu_only"] is True and "spill_warning" not in stats["ollama_ps"][when]


def test_a_reload_by_another_client_mid_run_is_named_in_stats(sim_factory, tmp_path, capsys, monkeypatch):
    """After the sixth answer another client asks for the model with another num_ctx (a reload of 2.5 s here);
    chunkwise's next request has to reload it again: its load_duration says so, and stats.json names it."""
    source = write_requests(tmp_path / "in.parquet", 12, prompt_words=6)
    sim = sim_factory(answer_tokens=(4, 8), load_ms=2500)
    answers = []

    def chat(client, request):
        result = client.chat(request)
        answers.append(1)
        if len(answers) == 6:
            httpx.post(f"{sim.url}/api/chat", timeout=30, json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False,
                "options": {"num_ctx": 1024, "num_predict": 1}})
        return result

    wrap_chat(monkeypatch, chat)
    code, out = run(sim, source, tmp_path, capsys, "--mode", "independent", "--chunk-size", "12")
    assert code == EXIT_OK, out
    reloads = results(tmp_path)[1]["model_load"]["reloads"]
    assert reloads["answers_after_a_load"] == 1 and reloads["events"][0]["load_s"] >= 2.5, reloads
    assert results(tmp_path)[1]["model_load"]["preload"]["load_s"] >= 2.5  # the run's own load, before any row


def test_a_run_stopped_by_the_breaker_prints_one_line_and_no_traceback(sim_factory, tmp_path):
    """The CLI in its own process: Prefect's flow and task engines log the exception that ended the run with
    its traceback; for chunkwise's own stop only the message remains, and the last line is the CLI's."""
    from prefect.settings import get_current_settings

    source = write_requests(tmp_path / "in.parquet", 12, prompt_words=6)
    sim = sim_factory(answer_tokens=(8, 16), stream_error_rate=1.0, process=True)
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "CHUNKWISE_RETRY_BASE_DELAY_S": "0.01",
           "CHUNKWISE_RUNS_ROOT": str(tmp_path), "CHUNKWISE_INPUTS_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "chunkwise", "run", "--input", str(source), "--host", sim.url,
                           "--output-dir", str(tmp_path / "runs"), "--run-name", "t", "--num-ctx", "2048",
                           "--mode", "independent", "--breaker-threshold", "2", "--max-attempts", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == EXIT_CONFIG, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("chunkwise run: run t stopped: ") and "different rows in a row" in last


def test_trimming_down_to_a_fraction_of_the_limit_re_evaluates_far_fewer_prompt_tokens(sim_factory, tmp_path, capsys,
                                                                                        monkeypatch):
    """Issue 19 item 7, measured on the simulator (its slots keep their last prompt and re-evaluate from the first
    token that differs, as Ollama's prompt cache does; prefill at 20,000 tokens/s): one chat of 60 turns trimmed
    one pair per turn (TRIM_TO_FRACTION 1.0, the old rule) against the same chat trimmed down to the fraction.
    The prompt tokens the server evaluated (not served from its cache) fall by more than half; every turn is
    answered either way."""
    from chunkwise.run import conversation

    source = write_requests(tmp_path / "in.parquet", 60, prompt_words=40)
    evaluated: dict[float, dict[str, int]] = {}
    for fraction in (1.0, conversation.TRIM_TO_FRACTION):
        monkeypatch.setattr(conversation, "TRIM_TO_FRACTION", fraction)
        sim = sim_factory(answer_tokens=(30, 60), prefill_tps=20000, seed=3)
        out_dir = tmp_path / f"trim-{fraction}"
        code, out = run(sim, source, out_dir, capsys, "--mode", "conversation", "--chunk-size", "60",
                        "--parallel", "1")
        assert code == EXIT_OK, out
        assert results(out_dir)[0]["status"].to_list() == ["ok"] * 60
        evaluated[fraction] = sim.stats(fingerprints=False)["prompt_tokens"]
    before, after = evaluated[1.0]["evaluated"], evaluated[conversation.TRIM_TO_FRACTION]["evaluated"]
    print(f"\nprompt tokens re-evaluated over 60 turns (simulator): one pair per turn {evaluated[1.0]}, down to "
          f"{conversation.TRIM_TO_FRACTION:g} of the limit {evaluated[conversation.TRIM_TO_FRACTION]}: "
          f"{1 - after / before:.0%} fewer")
    assert after < 0.5 * before
