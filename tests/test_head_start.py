"""The head start (`chunkwise.run.headstart`): `chunkwise run` sends its first chunks before Prefect's flow starts,
with the flow's own chunk code, and the flow adopts them; nothing is sent twice and a kill during the head start
resumes exactly once. Requests are counted at the simulator.

- pure: the head start on its own (no Prefect): it begins the first chunks in plan order, and the chunk tasks'
  body (`run_or_adopt`) returns their summaries without sending them again, while it runs every other chunk;
- flow: `chunkwise run` in this process with Prefect's API held back until the first chunk is checkpointed:
  the chunk was answered before the flow started, the flow sent it no second time, and the statistics and the
  manifest count it once;
- slow: `chunkwise run` killed (SIGKILL) during the head start, with the flow never started, then resumed:
  every request answered once in the results, at most `parallel` answered twice at the simulator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from chunkwise.errors import EXIT_OK
from chunkwise.run.prepare import plan_run, prepare_run
from chunkwise.store.files import read_json
from tests.support.pipeline_helpers import params_for, write_requests
from tests.support.run_checks import assert_answered_once, assert_reconciles, ledger_records

REPO = Path(__file__).resolve().parents[1]


def wait_for(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def answered(sim) -> int:
    return int(sim.stats(fingerprints=False)["answered_total"])


def test_the_head_start_begins_the_first_chunks_and_their_tasks_adopt_them_without_sending_again(
        sim_factory, tmp_path):
    from chunkwise.run.headstart import HeadStart, run_or_adopt

    sim = sim_factory(decode_tps=400, answer_tokens=(30, 60))  # a chunk lasts about a second: the hand-over is first
    source = write_requests(tmp_path / "in.parquet", 60)  # 12 chunks of 5, more than the head start's 8 workers
    params = params_for(sim, source, tmp_path / "runs", mode="independent", chunk_size=5)
    prepared = prepare_run(params)
    specs, manifest = plan_run(prepared, write=False)
    run_dir = prepared.ctx.dir
    head = HeadStart.begin(prepared, specs, manifest, stop=threading.Event())
    try:
        assert head.first_sent.wait(60)
        # the session is recorded before the first request, so the head start's answers count in it
        assert len(read_json(run_dir / "manifest.json")["sessions"]) == 1
        head.hand_over()
        begun = head.begun()
        assert begun and begun == list(range(len(begun))) and len(begun) < len(specs)
        summaries = [run_or_adopt(head.session, spec) for spec in specs]
    finally:
        head.close()
    assert [bool(s.get("head_start")) for s in summaries] == [i in begun for i in range(len(specs))]
    assert sum(s["sent"] for s in summaries) == 60 and all(s["ok"] == s["requests"] for s in summaries)
    assert head.adopt(0) is None  # adopted once; a retry of the task would run the chunk itself
    assert_answered_once(sim.stats(), expected=60)


def test_a_stop_during_the_head_start_is_raised_by_the_chunk_task_once_and_a_retry_sends_only_the_rest(
        sim_factory, tmp_path):
    from chunkwise.run.headstart import HeadStart, run_or_adopt

    sim = sim_factory(parallel=2, decode_tps=200, answer_tokens=(40, 60))
    source = write_requests(tmp_path / "in.parquet", 20)
    params = params_for(sim, source, tmp_path / "runs", mode="independent", chunk_size=20)
    prepared = prepare_run(params)
    specs, manifest = plan_run(prepared, write=False)
    stop = threading.Event()
    head = HeadStart.begin(prepared, specs, manifest, stop=stop)
    try:
        assert wait_for(lambda: answered(sim) >= 2)
        stop.set()  # Ctrl-C: the chunk ends with what is answered recorded
        head.hand_over()
        assert head.begun() == [0]
        with pytest.raises(Exception, match="stopped on request"):
            run_or_adopt(head.session, specs[0])
        stop.clear()
        summary = run_or_adopt(head.session, specs[0])  # the task's retry: the chunk itself, not the head start's
    finally:
        head.close()
    assert not summary.get("head_start") and 0 < summary["sent"] < 20 and summary["ok"] == 20
    assert_answered_once(sim.stats(), expected=20)


@pytest.mark.usefixtures("prefect_harness", "clean_process")
def test_chunkwise_run_sends_the_first_chunk_before_the_flow_starts_and_the_flow_does_not_send_it_again(
        sim, tmp_path, monkeypatch):
    """Prefect's API is held back (as a slow temporary server would be) until chunk 0 is checkpointed or 60 s
    passed: the first chunk must have been answered before the flow could start."""
    from chunkwise.commands.early_api import EarlyApi
    from chunkwise.commands.runner import execute

    source = write_requests(tmp_path / "in.parquet", 30)
    params = params_for(sim, source, tmp_path / "runs", mode="independent")
    run_dir = tmp_path / "runs" / "t"
    at_flow_start: dict[str, int] = {}
    real_wait = EarlyApi.wait

    def slow_api(self: EarlyApi) -> None:
        wait_for(lambda: (run_dir / "chunks" / "chunk-00000.parquet").exists())
        at_flow_start["answered"] = answered(sim)
        real_wait(self)

    monkeypatch.setattr(EarlyApi, "wait", slow_api)
    code, stats = execute(params, say=lambda *a: None)
    assert code == EXIT_OK and stats is not None
    assert at_flow_start["answered"] >= 10  # chunk 0 (10 rows) answered before the flow started
    assert_answered_once(sim.stats(), expected=30)
    results = pl.read_parquet(run_dir / "results.parquet")
    assert sorted(results["id"]) == [f"r{i:04d}" for i in range(30)]
    assert_reconciles(results, dict(stats))
    assert stats["requests"]["succeeded"] == 30
    assert len(read_json(run_dir / "manifest.json")["sessions"]) == 1  # one session, the head start's
    assert [s["requests_finished"] for s in stats["sessions"]] == [30]  # every answer in the one session
    assert stats["model_load"]["preload"]["load_s"] is not None  # the head start's load, recorded once
    records, bad = ledger_records(run_dir)
    assert bad == 0 and len(records) == 30 == len({r["_row"] for r in records})


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_kill_during_the_head_start_then_resume_answers_every_request_once(sim_factory, tmp_path):
    """The child's Prefect API never comes up (the flow never starts) and it is SIGKILLed once its head start
    has recorded five answers (`tests/support/crash_child.py` head-start); a resume completes the run."""
    from prefect.settings import get_current_settings

    env = dict(os.environ)
    env.update(PREFECT_API_URL=str(get_current_settings().api.url), PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_LOGGING_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    sim = sim_factory(parallel=4, decode_tps=400, answer_tokens=(30, 60))
    source = write_requests(tmp_path / "in.parquet", 40, prompt_words=10)
    out, parallel = tmp_path / "runs", 4
    args = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(out), "--run-name", "k",
            "--mode", "independent", "--parallel", str(parallel), "--chunk-size", "10", "--num-ctx", "2048",
            "--num-predict", "64"]

    def run(entry: list[str], cli: list[str]) -> tuple[int, str]:
        proc = subprocess.Popen([sys.executable, *entry, *cli], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            text, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
        return proc.returncode, text

    code, text = run(["-m", "tests.support.crash_child", "head-start"], args)
    assert code == -signal.SIGKILL, f"the run was meant to be killed during its head start\n{text}"
    records, _ = ledger_records(out / "k")
    assert 5 <= len(records) < 40
    code, text = run(["-m", "chunkwise"], ["resume", str(out / "k")])
    assert code == EXIT_OK, text
    stats = sim.stats()
    assert stats["fingerprints_answered_more_than_once"] <= parallel  # the answers in flight at the kill
    results = pl.read_parquet(out / "k" / "results.parquet")
    assert results["id"].is_unique().all() and results.height == 40 and set(results["status"]) == {"ok"}
    records, bad = ledger_records(out / "k")
    assert bad == 0 and len(records) == 40 == len({r["_row"] for r in records})
