"""Distributed mode on a real Prefect server (PostgreSQL), real workers and three simulator processes
with real-time rates, on loopback (issue 11). One cluster for the whole test session (slow tier).

The invariant every test checks: summed over all simulators' `/sim/stats`, every request answered was
answered exactly once (apart from at most `parallel` in flight at each injected fault);
results.parquet has one row per input row; the per-host rows of stats.json sum to the totals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from chunkwise.harness.cluster.local import get_json
from tests.support.cluster import Cluster, stop
from tests.support.pipeline_helpers import write_requests

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]

#: Real-time rates (SIM_ARGS): ~0.3 s per short answer, 2 slots: about 6 requests/s per host.
PARALLEL = 2


def answered_counts(c: Cluster) -> Counter:
    """Answers per request fingerprint, summed over every simulator."""
    total: Counter = Counter()
    for host in c.hosts:
        if host.sim is not None and host.sim.poll() is None:
            for fp, v in host.stats().get("fingerprints", {}).items():
                total[fp] += v["answered"]
    return total


def check_invariants(run_dir: Path, n: int, *, extra_allowed: int = 0) -> dict:
    stats = json.loads((run_dir / "stats.json").read_text())
    results = pl.read_parquet(run_dir / "results.parquet")
    assert results.height == n and results["id"].n_unique() == n
    rows = stats["hosts"]
    ok = results.filter(pl.col("status") == "ok").height
    assert sum(r["ok"] for r in rows) == ok, (rows, ok)
    assert ok <= sum(r["requests"] for r in rows) <= n + extra_allowed
    return stats


def test_three_healthy_hosts_share_the_work_and_each_answer_is_paid_once(cluster, tmp_path):
    n = 600
    before = answered_counts(cluster)
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    done = cluster.run_parent(src, "healthy", "--shard-requests", "200")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = cluster.shared / "healthy"
    stats = check_invariants(run_dir, n)
    after = answered_counts(cluster)
    new = {fp: after[fp] - before.get(fp, 0) for fp in after if after[fp] - before.get(fp, 0)}
    assert len(new) == n and set(new.values()) == {1}, Counter(new.values())
    rows = {r["host"]: r for r in stats["hosts"]}
    assert set(rows) == {"host1", "host2", "host3"}
    assert all(r["requests"] > 0 for r in rows.values()), rows
    assert sum(r["requests"] for r in rows.values()) == n  # nothing failed, nothing re-sent
    assert all(r["digest_check"] == "ok" for r in rows.values())
    facts = [json.loads(line) for p in (run_dir / "hosts").glob("*.jsonl") for line in p.read_text().splitlines()]
    shards = [f for f in facts if f["kind"] == "shard"]
    window = max(f["at"] for f in shards) - min(f["started"] for f in shards)
    # Issue 11: each host busy >= 90 % of the run. Measured here at load average ~3: 95-97 % (1.3 s of
    # start skew from the serial launches and the workers' 1-s polling, ~1.4 s of end skew in a 49-s
    # window); the 83-85 % seen earlier came from a load average of ~16 (other jobs slowing every shard
    # process's start), not from the mechanism.
    for name, r in rows.items():
        assert r["busy_s"] >= 0.90 * window, (name, r["busy_s"], window, shards)


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def exactly_once(deltas: dict[str, int], *, faults: int = 0) -> None:
    """Every answered fingerprint answered once, except at most `parallel` per fault (in flight then)."""
    twice = [fp for fp, count in deltas.items() if count > 1]
    assert max(deltas.values(), default=1) <= 2 and len(twice) <= PARALLEL * faults, Counter(deltas.values())


def deltas(before: Counter, after: Counter) -> dict[str, int]:
    return {fp: after[fp] - before.get(fp, 0) for fp in after if after[fp] - before.get(fp, 0)}


def test_a_host_that_dies_fails_its_shard_fast_and_its_chunks_finish_elsewhere(cluster, tmp_path):
    n = 450
    victim = cluster.hosts[1]
    before = answered_counts(cluster)
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    parent = cluster.run_parent(src, "dies", "--shard-requests", "75", background=True)
    try:
        start = victim.stats()["answered_total"]
        wait_for(lambda: victim.stats()["answered_total"] >= start + 30, 300, "host2 to answer 30 requests")
        last = victim.stats()  # its answers up to the kill (lost with the process otherwise)
        os.killpg(victim.sim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.sim.wait()
        assert parent.wait(timeout=600) == 0, (cluster.base / "parent-dies.log").read_text()[-3000:]
    finally:
        stop(parent)
    log = (cluster.base / "worker-host2.log").read_text()
    assert "stopped polling" in log, log[-2000:]
    run_dir = cluster.shared / "dies"
    stats = check_invariants(run_dir, n, extra_allowed=PARALLEL)
    after = answered_counts(cluster)
    for fp, v in last.get("fingerprints", {}).items():
        after[fp] += v["answered"]
    exactly_once(deltas(before, after), faults=1)
    # its shard ended (Failed, or Crashed when the stopping worker took it down) within about two minutes
    ends = [h["at"] for s in stats["distributed"]["shard_runs"] for h in s["history"]
            if h["state"] in ("FAILED", "CRASHED") and h["at"] >= killed_at]
    assert ends and min(ends) - killed_at <= 150, (ends, killed_at)
    assert stats["distributed"]["redispatched"] >= 1
    # the host is back: its worker polls again once its Ollama answers
    cluster.start_sim(victim)
    worker_log = cluster.base / "worker-host2.log"
    wait_for(lambda: "is usable; polling" in worker_log.read_text().split("stopped polling")[-1], 60,
             "host2's worker to poll again")


def test_two_shard_runs_for_the_same_chunks_send_each_request_once(cluster, tmp_path):
    n = 150
    before = answered_counts(cluster)
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    parent = cluster.run_parent(src, "twice", "--shard-requests", "10000", background=True)  # one shard
    run_dir = cluster.shared / "twice"
    try:
        wait_for(lambda: list((run_dir / "locks").glob("*.lock")) if (run_dir / "locks").exists() else None, 300,
                 "the first shard run to hold chunk locks")
        second = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", "chunkwise-shard/shard", "--param",
             f"run_dir={run_dir}", "--param", "shard=0", "--param", "attempt=99"],
            env=cluster.client_env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert parent.wait(timeout=600) == 0, (cluster.base / "parent-twice.log").read_text()[-3000:]
        facts = wait_for(lambda: [f for f in all_facts(run_dir) if f["kind"] == "shard" and f["attempt"] == 99],
                         300, "the second shard run to end")
    finally:
        stop(parent)
    check_invariants(run_dir, n)
    exactly_once(deltas(before, answered_counts(cluster)))
    assert sum(deltas(before, answered_counts(cluster)).values()) == n
    assert facts[0]["outcome"] == "completed" and facts[0]["skipped"], facts  # it met locked chunks and skipped them


def all_facts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for p in (run_dir / "hosts").glob("*.jsonl") for line in p.read_text().splitlines()]


def configure(host, **changes) -> None:
    """Change a simulator's options at runtime (POST /sim/config)."""
    req = urllib.request.Request(f"{host.url}/sim/config", data=json.dumps(changes).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def ledger_records(run_dir: Path) -> int:
    folder = run_dir / "ledger"
    return sum(p.read_bytes().count(b"\n") for p in folder.glob("*.jsonl")) if folder.is_dir() else 0


def shard_runs(c: Cluster, run_name: str) -> list[dict]:
    """Every shard flow run of `run_name` on the server (names are `<run>-shard-NNNN-aA`)."""
    runs = c.api("/flow_runs/filter", {"flow_runs": {"name": {"like_": f"{run_name}-shard-"}}, "limit": 200})
    return [r for r in runs if r["name"].startswith(f"{run_name}-shard-")]


def test_a_slow_host_pulls_fewer_shards_and_the_makespan_stays_near_ideal(cluster, tmp_path):
    n, per_shard = 200, 40
    slow = cluster.hosts[2]
    before = answered_counts(cluster)
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    configure(slow, decode_tps=12.5)  # a quarter of the others' decode rate (SIM_ARGS)
    try:
        done = cluster.run_parent(src, "slow", "--shard-requests", str(per_shard))
    finally:
        configure(slow, decode_tps=50)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = cluster.shared / "slow"
    stats = check_invariants(run_dir, n)
    new = deltas(before, answered_counts(cluster))
    exactly_once(new)
    assert sum(new.values()) == n
    rows = {r["host"]: r for r in stats["hosts"]}
    assert rows["host3"]["shards"] < min(rows["host1"]["shards"], rows["host2"]["shards"]), rows
    rates = {h: r["requests"] / r["busy_s"] for h, r in rows.items()}
    assert rates["host3"] < 0.5 * min(rates["host1"], rates["host2"]), rates
    shards = [f for f in all_facts(run_dir) if f["kind"] == "shard"]
    makespan = max(f["at"] for f in shards) - min(f["started"] for f in shards)
    ideal = n / sum(rates.values())  # every host busy to the end at its own rate
    bound = 1.15 * (ideal + per_shard / rates["host3"])  # plus one shard on the slowest host
    assert makespan <= bound, (makespan, ideal, bound, rates, {h: r['shards'] for h, r in rows.items()})


def test_a_killed_shard_process_is_marked_crashed_and_its_work_resumes_from_the_ledger(cluster, tmp_path):
    n = 300
    before = answered_counts(cluster)
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    run_dir = cluster.shared / "killed"
    parent = cluster.run_parent(src, "killed", "--shard-requests", "100", background=True)
    lock = run_dir / "locks" / "shard-0000-a0.lock"
    try:
        wait_for(lambda: ledger_records(run_dir) >= 60 and lock.exists() and lock.read_text().startswith("pid"),
                 300, "shard 0 to be running with answers in the ledger")
        pid = int(lock.read_text().split()[1])
        os.kill(pid, signal.SIGKILL)  # the shard's flow process, not its worker
        assert parent.wait(timeout=400) == 0, (cluster.base / "parent-killed.log").read_text()[-3000:]
    finally:
        stop(parent)
    stats = check_invariants(run_dir, n, extra_allowed=PARALLEL)
    new = deltas(before, answered_counts(cluster))
    exactly_once(new, faults=1)
    assert n <= sum(new.values()) <= n + PARALLEL
    shard0 = next(s for s in stats["distributed"]["shard_runs"] if s["shard"] == 0)
    states = [(h["attempt"], h["state"]) for h in shard0["history"]]
    assert (0, "CRASHED") in states and states[-1][1] == "COMPLETED" and shard0["attempts"] >= 2, states
    # the re-dispatch resumed a chunk the killed process had started: it found that chunk's answers
    starts = [f for f in all_facts(run_dir) if f["kind"] == "chunk-start" and f.get("shard") == 0]
    assert any(f["attempt"] >= 1 and f["before"] > 0 for f in starts), starts


def test_a_parent_killed_and_rerun_reattaches_to_its_shard_runs(cluster, tmp_path):
    n = 300
    before = answered_counts(cluster)
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    run_dir = cluster.shared / "rerun"
    parent = cluster.run_parent(src, "rerun", "--shard-requests", "100", background=True)
    try:
        wait_for(lambda: len(shard_runs(cluster, "rerun")) == 3 and ledger_records(run_dir) >= 30, 300,
                 "the parent to launch its 3 shard runs")
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    finally:
        stop(parent)
    assert ledger_records(run_dir) < n  # killed mid-run
    done = cluster.run_parent(src, "rerun", "--shard-requests", "100")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_invariants(run_dir, n)
    new = deltas(before, answered_counts(cluster))
    exactly_once(new)
    assert sum(new.values()) == n
    names = Counter(r["name"] for r in shard_runs(cluster, "rerun"))
    assert set(names.values()) == {1} and sorted(names) == [f"rerun-shard-{i:04d}-a0" for i in range(3)], names


def test_a_host_serving_another_digest_refuses_its_shard_and_the_others_finish(cluster, tmp_path):
    n = 120
    odd = cluster.hosts[2]
    want = next(m["digest"] for m in get_json(f"{cluster.hosts[0].url}/api/tags")["models"]
                if m["name"] == "llama3.1:8b")
    configure(odd, model_build="other-build")
    got = next(m["digest"] for m in get_json(f"{odd.url}/api/tags")["models"] if m["name"] == "llama3.1:8b")
    assert got != want
    log = cluster.base / "worker-host3.log"
    log_start = log.stat().st_size
    before = answered_counts(cluster)
    odd_before = odd.stats()["answered_total"]
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    try:
        done = cluster.run_parent(src, "digest", "--shard-requests", "40")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        run_dir = cluster.shared / "digest"
        stats = check_invariants(run_dir, n)
        new = deltas(before, answered_counts(cluster))
        exactly_once(new)
        assert sum(new.values()) == n and odd.stats()["answered_total"] == odd_before
        rows = {r["host"]: r for r in stats["hosts"]}
        assert rows["host3"]["requests"] == 0 and rows["host3"]["shards_refused"] >= 1, rows
        check = rows["host3"]["digest_check"]
        assert check.startswith("refused") and want[:12] in check and got[:12] in check, check
        # its worker learnt the run's digest from the refusal and stopped polling
        tail = log.read_text()[log_start:]
        assert "stopped polling" in tail and want[:12] in tail, tail
    finally:
        configure(odd, model_build="")
    wait_for(lambda: "is usable; polling" in log.read_text()[log_start:].split("stopped polling")[-1], 60,
             "host3's worker to poll again once it serves the run's digest")


def test_every_worker_stopped_then_restarted_sends_only_the_missing_requests(cluster, tmp_path):
    n = 240
    before = answered_counts(cluster)
    src = write_requests(tmp_path / "in.parquet", n, prompt_words=20)
    run_dir = cluster.shared / "restart"
    parent = cluster.run_parent(src, "restart", "--shard-requests", "80", background=True)
    try:
        wait_for(lambda: ledger_records(run_dir) >= 60, 300, "answers in the ledger")
        for host in cluster.hosts:
            stop(host.worker)
        sent_while_stopped = ledger_records(run_dir)
        assert sent_while_stopped < n  # stopped mid-run
        time.sleep(2)
        for host in cluster.hosts:
            cluster.start_worker(host)
        assert parent.wait(timeout=400) == 0, (cluster.base / "parent-restart.log").read_text()[-3000:]
    finally:
        stop(parent)
    stats = check_invariants(run_dir, n, extra_allowed=3 * PARALLEL)
    new = deltas(before, answered_counts(cluster))
    exactly_once(new, faults=3)  # at most `parallel` in flight on each host when its worker stopped
    assert n <= sum(new.values()) <= n + 3 * PARALLEL
    assert stats["distributed"]["redispatched"] >= 1
