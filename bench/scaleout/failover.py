"""The failover part: a simulator SIGKILLed mid-run (issue 11's test 2), then a shard flow process
SIGKILLed (test 4); how long until the work resumed elsewhere, and what was sent or answered twice."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from bench.scaleout.cluster import (
    answered,
    cluster_of,
    reset_sims,
    running_shard_pid,
    three_hosts,
    wait_for,
    write_requests,
)
from bench.scaleout.report import fmt
from bench.scaleout.timing import facts
from chunkwise.harness.cluster.local import Cluster


def failover_figures(run_dir: Path, fault_at: float, before: Counter[str], after: Counter[str],
                     n: int, received: Counter[str]) -> dict[str, Any]:
    """`before`/`after`: answers per fingerprint summed over the simulators; `received`: receipts per
    fingerprint over the run (a request sent to two hosts, or twice to one, counts 2)."""
    stats = json.loads((run_dir / "stats.json").read_text())
    ends = [h["at"] for s in stats["distributed"]["shard_runs"] for h in s["history"]
            if h["state"] in ("FAILED", "CRASHED") and h["at"] >= fault_at]
    resumed = [f["at"] for f in facts(run_dir) if f["kind"] == "chunk-start" and f.get("attempt", 0) > 0]
    new = {fp: after[fp] - before.get(fp, 0) for fp in after if after[fp] - before.get(fp, 0)}
    results = pl.read_parquet(run_dir / "results.parquet")
    return {"ended_s": min(ends) - fault_at if ends else None,
            "resumed_s": min(resumed) - fault_at if resumed else None,
            "answered": sum(new.values()), "distinct": len(new), "twice": sum(1 for c in new.values() if c > 1),
            "resent": sum(1 for c in received.values() if c > 1),
            "extra_sends": sum(c - 1 for c in received.values() if c > 1),
            "rows_ok": results.filter(pl.col("status") == "ok").height, "n": n,
            "redispatched": stats["distributed"]["redispatched"], "wall_s": stats["distributed"]["wall_s"]}


def start_run(cluster: Cluster, args: argparse.Namespace, name: str) -> tuple[Counter[str], subprocess.Popen[bytes]]:
    """Zero the simulators' counters and start the parent of run `name` in the background on
    `args.requests` fresh requests; returns the answers per fingerprint before it and the parent."""
    reset_sims(cluster)
    before = answered(cluster)
    src = write_requests(cluster.base / f"{name}.parquet", args.requests, name)
    parent = cluster.run_parent(src, name, "--shard-requests", str(args.shard), background=True, chunk_size=20)
    assert isinstance(parent, subprocess.Popen)
    return before, parent


def part_failover(args: argparse.Namespace) -> list[str]:
    out = {}
    with cluster_of(three_hosts()) as cluster:
        victim = cluster.hosts[1]
        # 1. host 2's simulator SIGKILLed after it answered 30 requests of this run
        before, parent = start_run(cluster, args, "kill-sim")
        wait_for(lambda: victim.stats()["answered_total"] >= 30, 300, "host2 to answer 30 requests")
        last = victim.stats()
        os.killpg(victim.sim.pid, signal.SIGKILL)  # type: ignore[union-attr]
        fault = time.time()
        assert parent.wait(timeout=900) == 0, "parent kill-sim failed"
        after, received = answered(cluster), answered(cluster, "received")
        for fp, v in last.get("fingerprints", {}).items():
            after[fp] += v["answered"]
            received[fp] += v["received"]
        out["a simulator (host 2) SIGKILLed"] = failover_figures(cluster.shared / "kill-sim", fault, before, after,
                                                                 args.requests, received)
        cluster.start_sim(victim)
        wait_for(lambda: "is usable; polling" in (cluster.base / "worker-host2.log").read_text()
                 .split("stopped polling")[-1], 120, "host2's worker to poll again")
        # 2. a shard flow process SIGKILLed (its worker lives on and reports it Crashed)
        before, parent = start_run(cluster, args, "kill-proc")
        run_dir = cluster.shared / "kill-proc"
        wait_for(lambda: sum(h.stats()["answered_total"] for h in cluster.hosts) >= 60, 300, "60 answers")
        pid, lock = wait_for(lambda: running_shard_pid(run_dir), 300, "a running shard process")
        os.kill(pid, signal.SIGKILL)
        fault = time.time()
        assert parent.wait(timeout=900) == 0, "parent kill-proc failed"
        out[f"a shard flow process ({lock}) SIGKILLed"] = failover_figures(
            run_dir, fault, before, answered(cluster), args.requests, answered(cluster, "received"))
    body = [f"3 hosts, {args.requests} requests, shards of {args.shard} requests, chunks of 20, parallel 2 per host. "
            "Fault to end: from the kill to the parent seeing the shard run Failed or Crashed (it polls every 2 s). "
            "Fault to resumed: from the kill to the first chunk taken by a re-dispatched attempt (its `chunk-start` "
            "fact). Re-sent: request fingerprints some simulator received more than once, summed over every "
            "simulator (a request in flight at the fault and sent again elsewhere; the issue allows `parallel` = 2 "
            "per fault), with the extra receipts in brackets. Answered twice: fingerprints answered more than once. "
            "The killed simulator's counts are read just before the kill.", "",
            "| fault | fault to end s | fault to resumed s | re-dispatches | answered | re-sent (extra receipts) | "
            "answered twice | rows ok / input | parent wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for what, f in out.items():
        body.append(f"| {what} | {fmt(f['ended_s'])} | {fmt(f['resumed_s'])} | {f['redispatched']} | "
                    f"{f['answered']} | {f['resent']} ({f['extra_sends']}) | {f['twice']} | {f['rows_ok']} / {f['n']} | "
                    f"{f['wall_s']:.0f} |")
    return body
