"""`chunkwise run` as a real process, killed and stopped, then resumed (slow: subprocesses).

Crash property: one run is SIGKILLed at 10 moments drawn from a seed -- during start-up, in the
middle of a request (six times), while the last checkpoint is being written, and twice during
aggregation -- each time resumed with `chunkwise run` (same run name) or `chunkwise resume RUN_DIR`.
The final results equal an uninterrupted run's, and the simulator answered every request exactly
once: nothing that reached the ledger was sent again.

Graceful stop: SIGTERM or SIGINT mid-run exits 130 after the in-flight requests finish, with every
answer in the ledger; a resume completes without re-sending any of them.

The simulator runs in this process; the children share the session's Prefect API server (one
start-up for the whole suite) through PREFECT_API_URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chunkwise.errors import EXIT_INTERRUPTED, EXIT_OK
from tests.support.kills import KillOnRequest, kill_plan
from tests.support.pipeline_helpers import write_requests
from tests.support.run_checks import assert_answered_once, assert_same_results, ledger_records, results

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

REPO = Path(__file__).resolve().parents[1]
SEED = 20241126
N = 48
#: No random incomplete answers: one is retried warmer (issue 19 item 3), so its text differs by design, and
#: the simulator's random draws land on other rows once a kill moves its request count; the comparison with
#: the uninterrupted run then fails on rows that were answered correctly. Unfinished answers and their
#: resume are tested in tests/test_failures_sim.py.
CRASH_SIM = dict(answer_tokens=(30, 60), parallel=1, fail_rate=0.03, incomplete_rate=0.0, seed=7)


@pytest.fixture
def child_env(tmp_path):
    from prefect.settings import get_current_settings

    env = dict(os.environ)
    env.update(PREFECT_API_URL=str(get_current_settings().api.url), PREFECT_HOME=str(tmp_path / "prefect-home"),
               PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1")
    return env


def spawn(args: list[str], env: dict, *, kill_point: str | None = None) -> subprocess.Popen:
    entry = ["-m", "tests.support.crash_child", kill_point] if kill_point else ["-m", "chunkwise"]
    return subprocess.Popen([sys.executable, *entry, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def run_args(source: Path, sim, out: Path, name: str) -> list[str]:
    return ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(out), "--run-name", name,
            "--mode", "conversation", "--parallel", "1", "--chunk-size", "8", "--num-ctx", "1024",
            "--num-predict", "128", "--system-prompt", "You are terse."]


def test_sigkill_at_seeded_moments_then_resume_gives_the_uninterrupted_results(
        sim_factory, tmp_path, child_env, monkeypatch):
    source = write_requests(tmp_path / "in.parquet", N, prompt_words=20)
    out = tmp_path / "runs"
    sim = sim_factory(**CRASH_SIM)

    code, text = finish(spawn(run_args(source, sim, out, "base"), child_env))
    assert code == EXIT_OK, text
    expected = results(out / "base")
    sim.reset()

    run_dir = out / "crash"
    killer = KillOnRequest(monkeypatch)
    plan = kill_plan(SEED)
    for kind, arg, how in plan:
        args = run_args(source, sim, out, "crash") if how == "run" or not run_dir.exists() else ["resume", str(run_dir)]
        proc = spawn(args, child_env, kill_point=kind if kind in ("checkpoint", "results", "stats") else None)
        if kind == "request":
            killer.arm(proc, arg)
        elif kind == "after":
            time.sleep(arg)
            proc.kill()
        code, text = finish(proc)
        killer.proc = None
        assert code == -signal.SIGKILL, f"{kind} {arg}: the session was meant to be killed\n{text}"
        if kind == "request":
            assert killer.fired
        if kind == "results":
            assert not (run_dir / "results.parquet").exists()
            assert list(run_dir.glob(".results.parquet.*.tmp"))  # killed with the new file not yet in place
        if kind == "checkpoint":
            assert list((run_dir / "chunks").glob(".chunk-*.parquet.*.tmp"))
        if kind == "stats":
            assert (run_dir / "results.parquet").exists() and not (run_dir / "stats.json").exists()

    code, text = finish(spawn(["resume", str(run_dir)], child_env))
    assert code == EXIT_OK, text
    assert_same_results(run_dir, expected)
    assert_answered_once(sim.stats(), expected=N)
    records, bad = ledger_records(run_dir)
    assert bad == 0 and len(records) == N == len({r["_row"] for r in records})


GRACE_SIM = dict(answer_tokens=(30, 60), parallel=4, decode_tps=400)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_exits_130_with_in_flight_answers_recorded(sim_factory, tmp_path, child_env, signum):
    source = write_requests(tmp_path / "in.parquet", 60, prompt_words=10)
    sim = sim_factory(**GRACE_SIM)
    run_dir = tmp_path / "runs" / "g"
    args = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(tmp_path / "runs"),
            "--run-name", "g", "--mode", "independent", "--parallel", "4", "--chunk-size", "10",
            "--num-ctx", "4096", "--num-predict", "128"]
    proc = spawn(args, child_env)
    deadline = time.monotonic() + 120
    while len(ledger_records(run_dir)[0]) < 12:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.02)
    proc.send_signal(signum)
    code, text = finish(proc)
    assert code == EXIT_INTERRUPTED, text
    assert f"{signal.Signals(signum).name}: no new requests" in text
    assert "Traceback" not in text  # Prefect logged the interrupt's traceback above the one line (issue 19)
    assert text.rstrip().splitlines()[-1].startswith("chunkwise run: run g stopped: "), text[-2000:]

    stats = sim.stats()
    records, bad = ledger_records(run_dir)
    assert bad == 0
    assert stats["in_flight"] == 0 and "499" not in stats["requests"]["/api/chat"]  # nothing was cut off
    assert len(records) == stats["answered_total"] < 60  # every answer it received is in the ledger

    code, text = finish(spawn(["resume", str(run_dir)], child_env))
    assert code == EXIT_OK, text
    assert_answered_once(sim.stats(), expected=60)
    final = results(run_dir)
    assert final["id"].is_unique().all() and set(final["status"]) == {"ok"} and final.height == 60


def test_in_flight_requests_past_the_grace_period_are_abandoned_and_resent_once(sim_factory, tmp_path, child_env):
    """The grace period is a bound: requests still generating after it are abandoned (exit 130), the
    server cancels them, and a resume sends each of them once."""
    source = write_requests(tmp_path / "in.parquet", 16, prompt_words=10)
    sim = sim_factory(answer_tokens=(30, 60), parallel=4, decode_tps=60)  # 0.5-1 s per answer, per slot
    run_dir = tmp_path / "runs" / "g"
    args = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(tmp_path / "runs"),
            "--run-name", "g", "--mode", "independent", "--parallel", "4", "--chunk-size", "8",
            "--num-ctx", "4096", "--num-predict", "128"]
    proc = spawn(args, {**child_env, "CHUNKWISE_STOP_GRACE_S": "0.2"})
    deadline = time.monotonic() + 120
    while not ledger_records(run_dir)[0]:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    code, text = finish(proc)
    assert code == EXIT_INTERRUPTED, text
    assert "in-flight requests did not finish within" in text and "exiting now (resumable)" in text
    deadline = time.monotonic() + 10
    while sim.stats()["in_flight"] and time.monotonic() < deadline:  # the server notices the closed connections
        time.sleep(0.05)
    stats = sim.stats()
    records, bad = ledger_records(run_dir)
    # The grace's end is a hard exit, like a kill: an answer the server finished writing in the last
    # milliseconds may not be in the ledger yet (issue 11's bound: at most `parallel` per fault). Seen
    # once in a fresh-clone run: 2 answered, 1 recorded.
    lost = stats["answered_total"] - len(records)
    assert bad == 0 and 0 <= lost <= 4 and stats["answered_total"] < 16
    assert stats["requests"]["/api/chat"].get("499", 0) > 0  # abandoned mid-generation, cancelled by the server

    sim.configure(decode_tps=0)
    code, text = finish(spawn(["resume", str(run_dir)], child_env))
    assert code == EXIT_OK, text
    final = sim.stats()  # every unrecorded request sent once more; only the `lost` ones answered twice
    assert final["answered_total"] == 16 + lost
    assert final["fingerprints_answered_more_than_once"] == lost and final["max_answered_per_fingerprint"] <= 2


def test_prefect_flow_run_retry_cli_finishes_a_failed_run(sim_factory, tmp_path, child_env, monkeypatch):
    """`prefect flow-run retry <id> --entrypoint flows/batch.py:batch` re-executes the same failed flow
    run, keeping its id (Prefect 3.9.1 `prefect/cli/flow_run.py` retry); it resumes from the ledger and
    sends nothing twice."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    from chunkwise.harness.sim import request

    real_resolve = request.resolve
    model = {"calls": 0, "gone": True}

    def resolve(name):  # the model disappears after 10 chat requests: the run fails (fatal, exit 2)
        model["calls"] += 1
        return None if model["calls"] > 10 and model["gone"] else real_resolve(name)

    monkeypatch.setattr(request, "resolve", resolve)
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=10)
    sim = sim_factory()
    out = tmp_path / "runs"
    args = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(out), "--run-name", "r",
            "--mode", "independent", "--parallel", "1", "--chunk-size", "8", "--num-ctx", "4096"]
    code, text = finish(spawn(args, child_env))
    assert code == 2 and "model 'llama3.1:8b' not found" in text, text

    with get_client(sync_client=True) as client:
        failed = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state={"type": FlowRunFilterStateType(any_=[StateType.FAILED])}))
        ours = [r for r in failed if r.parameters.get("params", {}).get("output_dir") == str(out)]
    assert len(ours) == 1
    model["gone"] = False  # pulled again
    retry = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(ours[0].id), "--entrypoint",
                            "flows/batch.py:batch"], cwd=REPO, env=child_env, capture_output=True, text=True,
                           timeout=180)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    with get_client(sync_client=True) as client:
        again = client.read_flow_run(ours[0].id)
    assert again.state.is_completed() and again.run_count == 2
    assert_answered_once(sim.stats(), expected=24)
    final = results(out / "r")
    assert final["id"].is_unique().all() and set(final["status"]) == {"ok"} and final.height == 24
