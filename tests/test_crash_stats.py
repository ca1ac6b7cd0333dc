"""Statistics across sessions: a run SIGKILLed half-way and resumed reports each session's requests
and active time, and rates that agree with the simulator's own counts and timings (slow: subprocesses).

The simulator counts what it answered and measures its slots' busy window (first lease -> last
release) per session (its statistics are reset between the two). A session's active time contains
that window (the session starts before its first request and ends at its last answer), so each
session's rate, and the whole run's, can be at most the simulator's, and must be close to it: the
old figure divided all requests by the last session's time alone and reported about twice the rate.
"""

from __future__ import annotations

import json

import pytest

from chunkwise.errors import EXIT_OK
from tests.support.pipeline_helpers import write_requests
from tests.test_crash import KillOnRequest, child_env, finish, run_args, spawn  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

N = 40
KILL_AT = 21  # the 21st request: 20 answered and recorded, then the client is killed


def test_rates_after_a_crash_and_resume_match_the_simulators_counts(sim_factory, tmp_path, child_env, monkeypatch):  # noqa: F811
    source = write_requests(tmp_path / "in.parquet", N, prompt_words=20)
    out = tmp_path / "runs"
    sim = sim_factory(answer_tokens=(40, 60), parallel=1, decode_tps=200, seed=7)  # ~0.25 s per answer
    killer = KillOnRequest(monkeypatch)
    proc = spawn(run_args(source, sim, out, "c"), child_env)
    killer.arm(proc, KILL_AT)
    code, text = finish(proc)
    assert killer.fired and code < 0, text
    first = sim.stats(fingerprints=False)
    killer.proc = None
    sim.reset()

    code, text = finish(spawn(run_args(source, sim, out, "c"), child_env))
    assert code == EXIT_OK, text
    second = sim.stats(fingerprints=False)

    stats = json.loads((out / "c" / "stats.json").read_text())
    sessions = stats["sessions"]
    assert len(sessions) == 2 and stats["run"]["sessions"] == 2
    assert [s["requests_finished"] for s in sessions] == [first["answered_total"], second["answered_total"]]
    assert first["answered_total"] == KILL_AT - 1 and first["answered_total"] + second["answered_total"] == N
    assert sessions[0]["end_from"] == "ledger"  # killed before any heartbeat: its last answer ends it
    for session, sim_stats in zip(sessions, (first, second), strict=True):
        window = sim_stats["slots"]["window_s"]
        assert window > 1.0
        # the session contains the server's busy window (tolerance: the killed request's 500 after the last answer)
        assert session["active_seconds"] >= window - 0.5, (session, window)
        assert session["requests_per_s"] <= sim_stats["answered_total"] / (window - 0.5)
    true_rate = N / (first["slots"]["window_s"] + second["slots"]["window_s"])
    rate = stats["throughput"]["requests_per_s"]
    assert rate <= true_rate * 1.05, (rate, true_rate)
    assert stats["throughput"]["active_seconds"] == pytest.approx(sum(s["active_seconds"] for s in sessions), abs=0.01)
