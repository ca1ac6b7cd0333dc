"""Distributed mode on one machine (simulated hosts): scaling E(N), dispatch overhead and tail,
failover, Prefect server API latency on PostgreSQL -> bench/results/scaleout.md.

Every figure is obtained against chunkwise's Ollama simulator with real-time rates (about 6
requests/s per host: 2 slots, ~0.3 s per short answer), all processes on this machine's cores.
E(N) = throughput with N hosts / (N x throughput of host 1 alone): the simulated hosts are
identical, so host 1 alone stands for each host alone. Throughput is counted over the shard window
(first shard start to last shard end, from the hosts' facts) and, separately, over the parent's
whole wall time (which adds Prefect's dispatch: worker poll + flow process start).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import polars as pl

from chunkwise.cluster.local import SIM_ARGS, cleanup_tree, make_base, start_cluster, stop

OUT = Path(__file__).parent / "results" / "scaleout.md"
N_REQUESTS = int(os.environ.get("SCALEOUT_REQUESTS", "600"))
SHARD = int(os.environ.get("SCALEOUT_SHARD", "100"))


def facts(run_dir: Path) -> list[dict]:
    return [json.loads(x) for p in (run_dir / "hosts").glob("*.jsonl") for x in p.read_text().splitlines()]


def shard_window(run_dir: Path) -> tuple[float, float, float, float]:
    """(window s, idle share between shards, tail s, requests) from the hosts' facts."""
    shards = [f for f in facts(run_dir) if f["kind"] == "shard"]
    start, end = min(f["started"] for f in shards), max(f["at"] for f in shards)
    idle, first_idle = 0.0, end
    by_host: dict[str, list[dict]] = {}
    for p in (run_dir / "hosts").glob("*.jsonl"):
        by_host[p.stem] = sorted((json.loads(x) for x in p.read_text().splitlines() if '"shard"' in x),
                                 key=lambda f: f["started"])
    for runs in by_host.values():
        runs = [f for f in runs if f["kind"] == "shard"]
        idle += sum(max(0.0, b["started"] - a["at"]) for a, b in pairwise(runs))
        idle += runs[0]["started"] - start
        first_idle = min(first_idle, runs[-1]["at"])
    window = end - start
    requests = sum(f["requests"] for f in facts(run_dir) if f["kind"] == "chunk")
    return window, idle / (window * len(by_host)), end - first_idle, requests


def api_latency(url: str, stop_event: threading.Event, out: list[float]) -> None:
    body = json.dumps({"limit": 50}).encode()
    while not stop_event.is_set():
        t = time.perf_counter()
        req = urllib.request.Request(f"{url}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.5)


def write_requests(path: Path, n: int, salt: str) -> Path:
    prompts = [f"{salt} request {i}: one line about item {i * 7 % 997}." for i in range(n)]
    pl.DataFrame({"id": [f"{salt}{i:05d}" for i in range(n)], "prompt": prompts}).write_parquet(path)
    return path


def main() -> int:
    base = make_base()
    cluster = start_cluster(base, [[*SIM_ARGS, "--seed", str(k)] for k in range(3)])
    rows, lines = [], []
    try:
        for n_hosts in (1, 2, 3):
            for k, host in enumerate(cluster.hosts):  # only the first n_hosts workers poll
                if k < n_hosts and (host.worker is None or host.worker.poll() is not None):
                    cluster.start_worker(host)
                elif k >= n_hosts:
                    stop(host.worker)
                    host.worker = None
            time.sleep(5)
            lat: list[float] = []
            halt = threading.Event()
            probe = threading.Thread(target=api_latency, args=(cluster.api_url, halt, lat), daemon=True)
            probe.start()
            src = write_requests(base / f"in{n_hosts}.parquet", N_REQUESTS * n_hosts, f"n{n_hosts}")
            t = time.monotonic()
            done = cluster.run_parent(src, f"n{n_hosts}", "--shard-requests", str(SHARD), timeout_s=3600)
            wall = time.monotonic() - t
            halt.set()
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
                return 1
            window, idle, tail, requests = shard_window(cluster.shared / f"n{n_hosts}")
            lat.sort()
            rows.append({"hosts": n_hosts, "requests": requests, "window_s": window, "wall_s": wall,
                         "rps_window": requests / window, "rps_wall": requests / wall, "idle": idle, "tail_s": tail,
                         "api_p50_ms": statistics.median(lat) if lat else None,
                         "api_p95_ms": lat[int(0.95 * (len(lat) - 1))] if lat else None})
            print(rows[-1], flush=True)
        one = rows[0]["rps_window"]
        # failover: kill host 2's simulator mid-run with 3 hosts
        victim = cluster.hosts[1]
        for host in cluster.hosts:
            if host.worker is None or host.worker.poll() is not None:
                cluster.start_worker(host)
        src = write_requests(base / "fail.parquet", N_REQUESTS * 3, "f")
        parent = cluster.run_parent(src, "failover", "--shard-requests", str(SHARD), background=True)
        start_answers = victim.stats()["answered_total"]
        while victim.stats()["answered_total"] < start_answers + 30:
            time.sleep(0.2)
        os.killpg(victim.sim.pid, signal.SIGKILL)
        killed = time.time()
        parent.wait(timeout=3600)
        stats = json.loads((cluster.shared / "failover" / "stats.json").read_text())
        ends = [h["at"] for s in stats["distributed"]["shard_runs"] for h in s["history"]
                if h["state"] in ("FAILED", "CRASHED") and h["at"] >= killed]
        resumed = [f["started"] for f in facts(cluster.shared / "failover")
                   if f["kind"] == "shard" and f.get("attempt", 0) > 0]
        fail_s = min(ends) - killed if ends else None
        resume_s = min(resumed) - killed if resumed else None
    finally:
        cluster.close()
        cleanup_tree(base)
    lines = [
        "# Distributed mode on one machine (simulated hosts)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores shared with the servers,",
        "PostgreSQL 15 + Prefect 3.9.1 server, 3 `chunkwise sim` processes with real-time rates (2 slots, ~0.3 s per",
        f"answer), {N_REQUESTS} requests per host, shards of {SHARD} requests (~{SHARD / 6:.0f} s of one host's work).",
        "**Simulator figures**: they show the machinery's overheads, not a GPU's speed.",
        "",
        "| hosts | requests | shard window s | parent wall s | req/s (window) | req/s (wall) | E(N) window | "
        "idle between shards | tail s | API p50 ms | API p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["rps_window"] / (r["hosts"] * one)
        lines.append(f"| {r['hosts']} | {r['requests']} | {r['window_s']:.1f} | {r['wall_s']:.1f} "
                     f"| {r['rps_window']:.2f} "
                     f"| {r['rps_wall']:.2f} | {e:.2f} | {r['idle']:.1%} | {r['tail_s']:.1f} | "
                     f"{r['api_p50_ms'] or 0:.0f} | {r['api_p95_ms'] or 0:.0f} |")
    lines += ["", f"Failover (host 2's simulator SIGKILLed after 30 answers, 3 hosts): shard ended "
              f"{fail_s if fail_s is None else round(fail_s, 1)} s after the kill; first re-dispatched shard started "
              f"{resume_s if resume_s is None else round(resume_s, 1)} s after it. Requests re-sent: see the cluster "
              "test (answered ones: none; in flight: at most `parallel`).",
              "", "Not measured here: the ceiling of one orchestrating process (hosts one flow process can feed).",
              "", "Reproduce: `python -m bench.scaleout` (SCALEOUT_REQUESTS, SCALEOUT_SHARD)."]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
