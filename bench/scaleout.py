"""Distributed mode on one machine (simulated hosts) -> bench/results/scaleout.md, one section per part.

    python -m bench.scaleout --part scaling    # E(N) for N = 1, 2, 3 hosts, idle between shards, API latency
    python -m bench.scaleout --part shards     # idle between shards and the tail against shard size (3 hosts)
    python -m bench.scaleout --part failover   # a killed simulator, a killed shard process
    python -m bench.scaleout --part ceiling    # one parent's cost per shard; one shard process at zero latency

Each part starts its own loopback cluster (`chunkwise.cluster.local`: PostgreSQL, a Prefect server,
simulators, `chunkwise worker`s) and stops it; each stays under about ten minutes on 2 cores. Every
figure is obtained against chunkwise's Ollama simulator, all processes on this machine's cores, so
they show the machinery's overheads, not a GPU's speed.

E(N) = throughput with N hosts / (N x throughput of host 1 alone): the simulated hosts run the
same flags (only the answer-length seed differs), so host 1 alone stands for each host alone.
Throughput is counted over the shard window (first shard start to last shard end, from the hosts'
facts in `hosts/*.jsonl`) and over the parent's whole wall time (which adds staging, planning,
Prefect's dispatch and aggregation). Host idle between shards: the gaps between one host's
consecutive shard runs (worker poll + flow process start + preflight), summed over hosts, as a share
of hosts x window. Tail: from the first host's last shard end to the window's end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import polars as pl

from bench.procs import Sampler, replace_section
from chunkwise.cluster.local import SIM_ARGS, Cluster, cleanup_tree, make_base, start_cluster, stop
from chunkwise.results.stats import host_rows_table

OUT = Path(__file__).parent / "results" / "scaleout.md"
HEAD = [
    "# Distributed mode on one machine (simulated hosts)",
    "",
    "**Simulator figures.** Every process (PostgreSQL, the Prefect server, the parent, the workers, the shard",
    "flow processes and the `chunkwise sim` hosts) shares this machine's 2 cores with other developers' work;",
    "the figures show chunkwise's and Prefect's overheads, not a GPU's speed. Simulated hosts run",
    f"`chunkwise sim {' '.join(SIM_ARGS)}` (real-time rates: 2 slots, ~0.3 s per short answer, about 6 req/s",
    "per host). Each section is one `python -m bench.scaleout --part NAME` invocation; see the module docstring",
    "for the definitions.",
    "",
]


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def facts(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in (run_dir / "hosts").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                out.append({**json.loads(line), "_file": path.stem})
            except json.JSONDecodeError:
                continue
    return out


def shard_timing(run_dir: Path) -> dict[str, Any]:
    """Window, idle between shards, lead-in and tail from the hosts' shard facts (epoch s)."""
    shards = [f for f in facts(run_dir) if f["kind"] == "shard" and "started" in f]
    start, end = min(f["started"] for f in shards), max(f["at"] for f in shards)
    window = end - start
    by_host: dict[str, list[dict[str, Any]]] = {}
    for f in shards:
        by_host.setdefault(f["_file"], []).append(f)
    gaps, leads, last_ends, each = 0.0, [], [], []
    for runs in by_host.values():
        runs.sort(key=lambda f: f["started"])
        each += [max(0.0, b["started"] - a["at"]) for a, b in pairwise(runs)]
        gaps += sum(max(0.0, b["started"] - a["at"]) for a, b in pairwise(runs))
        leads.append(runs[0]["started"] - start)
        last_ends.append(max(f["at"] for f in runs))
    requests = sum(f["requests"] for f in facts(run_dir) if f["kind"] == "chunk")
    return {"window_s": window, "idle_between": gaps / (window * len(by_host)), "lead_in_s": max(leads),
            "tail_s": end - min(last_ends), "gap_mean_s": statistics.mean(each) if each else None,
            "shard_mean_s": statistics.mean(f["at"] - f["started"] for f in shards), "requests": requests, "hosts_used": len(by_host),
            "shards_per_host": sorted(len(r) for r in by_host.values()),
            "busy_share": {h: sum(f["at"] - f["started"] for f in r) / window for h, r in sorted(by_host.items())}}


class ApiProbe(Sampler):
    """POST /flow_runs/filter (limit 50) every 0.5 s while the run goes on: the Prefect server's API
    latency under the cluster's load (the parent polls every shard's state, workers poll the pool,
    shard flows report task runs)."""

    def __init__(self, api_url: str) -> None:
        super().__init__()
        self.url, self.ms = api_url, []  # type: ignore[var-annotated]

    def _loop(self) -> None:
        body = json.dumps({"limit": 50}).encode()
        while not self._stop.is_set():
            t = time.perf_counter()
            req = urllib.request.Request(f"{self.url}/flow_runs/filter", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    resp.read()
                self.ms.append((time.perf_counter() - t) * 1000)
            except OSError:
                self.ms.append(float("inf"))
            self._stop.wait(0.5)


    def quantiles(self) -> tuple[float, float, float]:
        ms = sorted(self.ms) or [float("nan")]
        return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))], ms[-1]


def api(url: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def gap_breakdown(api_url: str, run_name: str, run_dir: Path) -> dict[str, float] | None:
    """Where a host's time between two shards goes (means over the run's gaps, s), from the hosts'
    facts and the shard flow runs' state timestamps: `report` = the flow body's end to its run's
    final state on the server; `pickup` = that final state to the next run's Pending (the process
    exits, the worker polls); `spawn` = Pending to Running (process start, imports, Prefect's engine);
    `enter` = Running to the flow body's first line."""
    def ts(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    runs = api(f"{api_url}/flow_runs/filter", {"flow_runs": {"name": {"like_": f"{run_name}-shard-"}}, "limit": 200})
    by_name = {}
    for run in runs:
        states = api(f"{api_url}/flow_run_states/?flow_run_id={run['id']}")
        first: dict[str, float] = {}
        for state in sorted(states, key=lambda x: x["timestamp"]):
            first.setdefault(state["type"], ts(state["timestamp"]))
        by_name[run["name"]] = first
    parts: dict[str, list[float]] = {"report": [], "pickup": [], "spawn": [], "enter": []}
    by_host: dict[str, list[dict[str, Any]]] = {}
    for f in facts(run_dir):
        if f["kind"] == "shard" and "started" in f:
            by_host.setdefault(f["_file"], []).append(f)
    for shards in by_host.values():
        shards.sort(key=lambda f: f["started"])
        for a, b in pairwise(shards):
            sa = by_name.get(f"{run_name}-shard-{a['shard']:04d}-a{a['attempt']}", {})
            sb = by_name.get(f"{run_name}-shard-{b['shard']:04d}-a{b['attempt']}", {})
            end = sa.get("COMPLETED") or sa.get("FAILED")
            if end is None or "PENDING" not in sb or "RUNNING" not in sb:
                continue
            parts["report"].append(end - a["at"])
            parts["pickup"].append(sb["PENDING"] - end)
            parts["spawn"].append(sb["RUNNING"] - sb["PENDING"])
            parts["enter"].append(b["started"] - sb["RUNNING"])
    return {k: statistics.mean(v) for k, v in parts.items()} if parts["spawn"] else None


def write_requests(path: Path, n: int, salt: str) -> Path:
    prompts = [f"{salt} request {i}: one line about item {i * 7 % 997}." for i in range(n)]
    pl.DataFrame({"id": [f"{salt}{i:05d}" for i in range(n)], "prompt": prompts}).write_parquet(path)
    return path


@contextmanager
def cluster_of(sim_args: list[list[str]], parallel: int = 2) -> Iterator[Cluster]:
    base = make_base()
    cluster = start_cluster(base, sim_args)
    if parallel != 2:
        for host in cluster.hosts:
            stop(host.worker)
            cluster.start_worker(host, parallel=parallel)
    try:
        yield cluster
    finally:
        cluster.close()
        cleanup_tree(base)


def use_hosts(cluster: Cluster, n: int) -> None:
    """Only the first `n` hosts' workers poll."""
    for k, host in enumerate(cluster.hosts):
        if k < n and (host.worker is None or host.worker.poll() is not None):
            cluster.start_worker(host)
        elif k >= n:
            stop(host.worker)
            host.worker = None
    time.sleep(3)


def reset_sims(cluster: Cluster) -> None:
    for host in cluster.hosts:
        if host.sim is not None and host.sim.poll() is None:
            urllib.request.urlopen(urllib.request.Request(f"{host.url}/sim/reset", data=b"", method="POST"),
                                   timeout=10).read()


def answered(cluster: Cluster, key: str = "answered") -> Counter[str]:
    """Per request fingerprint, summed over the live simulators: answers (or, key="received", receipts)."""
    total: Counter[str] = Counter()
    for host in cluster.hosts:
        if host.sim is not None and host.sim.poll() is None:
            for fp, v in host.stats().get("fingerprints", {}).items():
                total[fp] += v[key]
    return total


def measured_run(cluster: Cluster, n: int, name: str, shard: int) -> dict[str, Any]:
    reset_sims(cluster)
    src = write_requests(cluster.base / f"{name}.parquet", n, name)
    with ApiProbe(cluster.api_url) as probe:
        t = time.monotonic()
        done = cluster.run_parent(src, name, "--shard-requests", str(shard), timeout_s=1200, chunk_size=20)
        wall = time.monotonic() - t
    assert isinstance(done, subprocess.CompletedProcess)
    if done.returncode != 0:
        raise RuntimeError(f"parent {name} exited {done.returncode}: {done.stdout[-1500:]} {done.stderr[-1500:]}")
    row = {"name": name, "requests_in": n, "shard": shard, "wall_s": wall, **shard_timing(cluster.shared / name)}
    row["api_ms"] = probe.quantiles()
    stats = json.loads((cluster.shared / name / "stats.json").read_text())
    row["adds_up"] = "): add up;" in host_rows_table(stats)[-1][1] if stats.get("hosts") else None
    row["host_rps"] = [h["req_per_s"] for h in stats.get("hosts") or []]
    try:
        row["gap_parts"] = gap_breakdown(cluster.api_url, name, cluster.shared / name)
    except Exception as exc:  # noqa: BLE001 (an optional figure: the run's own figures stand without it)
        row["gap_parts"] = None
        print(f"gap breakdown unavailable: {exc!r}", file=sys.stderr)
    row["twice"] = sum(1 for c in answered(cluster).values() if c > 1)
    print(json.dumps(row, default=str), flush=True)
    return row


def section(label: str, command: str, load_before: str, body: list[str]) -> list[str]:
    return [f"## {label}", "", f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores. "
            f"Command: `{command}`. Load average before: {load_before}; after: {load()}.", "", *body, ""]


def api_cell(r: dict[str, Any]) -> str:
    p50, p95, top = r["api_ms"]
    return f"{p50:.0f} / {p95:.0f} / {top:.0f}"


def part_scaling(args: argparse.Namespace) -> list[str]:
    rows = []
    with cluster_of([[*SIM_ARGS, "--seed", str(k)] for k in range(3)]) as cluster:
        for n_hosts in args.hosts:
            use_hosts(cluster, n_hosts)
            rows.append(measured_run(cluster, args.per_host * n_hosts, f"n{n_hosts}", args.shard))
    one = rows[0]["requests"] / rows[0]["window_s"]
    one_wall = rows[0]["requests"] / rows[0]["wall_s"]
    body = [f"{args.per_host} requests per host, shards of {args.shard} requests (~{args.shard / 6:.0f} s of one "
            "host's work), chunks of 20.", "",
            "| hosts | requests | shard window s | parent wall s | req/s window | E(N) window | req/s wall | "
            "E(N) wall | shards per host | idle between shards | gap s: report / pickup / spawn / enter | tail s | "
            "host req/s (busy) | host rows add up | API ms p50 / p95 / max |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n, rps, rps_wall = r["hosts_used"], r["requests"] / r["window_s"], r["requests"] / r["wall_s"]
        body.append(f"| {n} | {r['requests']} | {r['window_s']:.1f} | {r['wall_s']:.1f} | {rps:.2f} | "
                    f"{rps / (n * one):.2f} | {rps_wall:.2f} | {rps_wall / (n * one_wall):.2f} | "
                    f"{r['shards_per_host']} | {r['idle_between']:.1%} | {parts_cell(r)} | {r['tail_s']:.1f} | "
                    f"{r['host_rps']} | "
                    f"{r['adds_up']} | {api_cell(r)} |")
    body += ["", "Answered more than once (summed over the simulators' `/sim/stats`): "
             + ", ".join(f"{r['hosts_used']} hosts {r['twice']}" for r in rows) + "."]
    return body


def part_shards(args: argparse.Namespace) -> list[str]:
    rows = []
    with cluster_of([[*SIM_ARGS, "--seed", str(k)] for k in range(3)]) as cluster:
        for size in args.sizes:
            rows.append(measured_run(cluster, args.requests, f"s{size}", size))
    body = [f"3 hosts, {args.requests} requests, chunks of 20.", "",
            "| shard requests | shard run s (mean) | shards per host | shard window s | parent wall s | "
            "gap between shards s (mean) | gap: report / pickup / spawn / enter s | idle between shards | "
            "lead-in s | tail s | busy share per host | API ms p50 / p95 / max |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        busy = ", ".join(f"{v:.0%}" for v in r["busy_share"].values())
        body.append(f"| {r['shard']} | {r['shard_mean_s']:.1f} | {r['shards_per_host']} | {r['window_s']:.1f} | "
                    f"{r['wall_s']:.1f} | {fmt(r['gap_mean_s'])} | {parts_cell(r)} | {r['idle_between']:.1%} | {r['lead_in_s']:.1f} | {r['tail_s']:.1f} | "
                    f"{busy} | {api_cell(r)} |")
    return body


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def running_shard_pid(run_dir: Path) -> tuple[int, str] | None:
    """(pid, lock name) of a live shard process holding its shard lock, from the lock file's text."""
    from chunkwise.store import chunklock

    for path in sorted((run_dir / "locks").glob("shard-*.lock")) if (run_dir / "locks").exists() else []:
        if not chunklock.is_held(path) or not list((run_dir / "ledger").glob("*.jsonl")):
            continue
        text = path.read_text().split()  # "pid P on HOST", written by the holder when it took the lock
        if len(text) >= 2 and text[1].isdigit() and int(text[1]) != os.getpid():
            return int(text[1]), path.stem
    return None


def failover_figures(run_dir: Path, fault_at: float, before: Counter[str], after: Counter[str],
                     n: int, received: Counter[str]) -> dict[str, Any]:
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
            "rows_ok": results.filter(pl.col("status") == "ok").height, "n": n,
            "redispatched": stats["distributed"]["redispatched"], "wall_s": stats["distributed"]["wall_s"]}


def part_failover(args: argparse.Namespace) -> list[str]:
    out = {}
    with cluster_of([[*SIM_ARGS, "--seed", str(k)] for k in range(3)]) as cluster:
        victim = cluster.hosts[1]
        # 1. host 2's simulator SIGKILLed after it answered 30 requests of this run
        reset_sims(cluster)
        before = answered(cluster)
        src = write_requests(cluster.base / "sim.parquet", args.requests, "fs")
        parent = cluster.run_parent(src, "kill-sim", "--shard-requests", str(args.shard), background=True,
                                    chunk_size=20)
        assert isinstance(parent, subprocess.Popen)
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
        reset_sims(cluster)
        before = answered(cluster)
        src = write_requests(cluster.base / "proc.parquet", args.requests, "fp")
        parent = cluster.run_parent(src, "kill-proc", "--shard-requests", str(args.shard), background=True,
                                    chunk_size=20)
        assert isinstance(parent, subprocess.Popen)
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
            "fact). Answered twice: request fingerprints answered more than once, summed over every simulator "
            "(the killed simulator's counts read just before the kill); re-sent: fingerprints received more than "
            "once (requests in flight at the fault and sent again).", "",
            "| fault | fault to end s | fault to resumed s | re-dispatches | answered | re-sent | answered twice | "
            "rows ok / input | parent wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for what, f in out.items():
        body.append(f"| {what} | {fmt(f['ended_s'])} | {fmt(f['resumed_s'])} | {f['redispatched']} | "
                    f"{f['answered']} | {f['resent']} | {f['twice']} | {f['rows_ok']} / {f['n']} | {f['wall_s']:.0f} |")
    return body


def parts_cell(r: dict[str, Any]) -> str:
    g = r.get("gap_parts")
    return "n/a" if not g else " / ".join(f"{g[k]:.1f}" for k in ("report", "pickup", "spawn", "enter"))


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def parent_costs(cluster: Cluster, count: int) -> dict[str, float]:
    """Launch `count` shard runs through the parent's dispatcher with no worker polling, then time the
    parent's poll (one state read per outstanding shard)."""
    os.environ.update({k: v for k, v in cluster.env.items() if k.startswith("PREFECT_")})
    from chunkwise.plan.shards import Shard
    from tasks.dispatch import PrefectDispatcher

    dispatcher = PrefectDispatcher(str(cluster.shared / "idle"), "idle", pool="chunkwise-gpu")
    ids, launch = [], []
    for k in range(count):
        t = time.perf_counter()
        ids.append(dispatcher.launch(Shard(index=k, chunks=(k,), requests=1), 0, f"idle:{k}:0", retry=False))
        launch.append(time.perf_counter() - t)
    t = time.perf_counter()
    for run_id in ids:
        dispatcher.state(run_id)
    cycle = time.perf_counter() - t
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    t = time.perf_counter()
    found = dispatcher._client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in ids])), limit=count)
    batch = time.perf_counter() - t
    assert len(found) == count, (len(found), count)
    return {"batch_s": batch, "launch_ms": statistics.median(launch) * 1000, "launch_p95_ms": sorted(launch)[int(0.95 * (count - 1))]
            * 1000, "cycle_s": cycle, "read_ms": cycle / count * 1000, "count": count}


def part_ceiling(args: argparse.Namespace) -> list[str]:
    zero = ["--parallel", "4", "--answer-tokens", "8:24"]
    with cluster_of([zero], parallel=4) as cluster:
        row = measured_run(cluster, args.zero_requests, "zero", args.zero_requests)
        use_hosts(cluster, 0)
        costs = parent_costs(cluster, args.shards)
    rps = row["requests"] / row["window_s"]
    per_shard = costs["read_ms"] / 1000
    body = [
        f"**One shard flow process** against one zero-latency simulator (`chunkwise sim {' '.join(zero)}`, worker "
        f"`--parallel 4`), {args.zero_requests} requests in one shard: {row['requests']} requests in "
        f"{row['window_s']:.1f} s of shard run = **{rps:.0f} req/s** (parent wall {row['wall_s']:.1f} s). A GPU host "
        f"answers 5-20 req/s, so one flow process could feed about {rps / 20:.0f}-{rps / 5:.0f} such hosts' worth of "
        "requests; in distributed mode each host has its own shard process, so this bounds one host, not the cluster.",
        "",
        f"**One parent process** (the orchestrator: it launches one flow run per shard, then reads the state of "
        f"every unfinished shard every 2 s), {costs['count']} shard runs launched on the PostgreSQL server with no "
        f"worker polling: launch {costs['launch_ms']:.0f} ms median ({costs['launch_p95_ms']:.0f} ms p95) per shard. "
        f"Their states read one call per shard: {costs['cycle_s']:.2f} s ({costs['read_ms']:.1f} ms per shard, so a "
        f"2 s poll is full at about {2 / per_shard:.0f} unfinished shards); read in one filtered call "
        f"(`read_flow_runs`, ids any of; what the parent does, in pages of 200): {costs['batch_s'] * 1000:.0f} ms. "
        "The hosts a parent can keep fed are not bounded by it: a host holds one shard at a time and pulls the "
        "next from the work queue without the parent.",
    ]
    return body


PARTS = {"scaling": part_scaling, "shards": part_shards, "failover": part_failover, "ceiling": part_ceiling}
LABELS = {"scaling": "Scaling efficiency E(N)", "shards": "Dispatch overhead and tail against shard size",
          "failover": "Failover", "ceiling": "The ceiling of one orchestrating process"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=sorted(PARTS), required=True)
    ap.add_argument("--per-host", type=int, default=480, help="scaling: requests per host")
    ap.add_argument("--shard", type=int, default=160, help="scaling/failover: requests per shard")
    ap.add_argument("--hosts", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3],
                    help="scaling: host counts to run (the first must be 1: E(N) divides by it)")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[120, 240],
                    help="shards: shard sizes to compare")
    ap.add_argument("--requests", type=int, default=1440, help="shards/failover: requests per run")
    ap.add_argument("--zero-requests", type=int, default=6000, help="ceiling: requests at zero latency")
    ap.add_argument("--shards", type=int, default=100, help="ceiling: shard runs the parent launches")
    ap.add_argument("--dry", action="store_true", help="print the section, do not write the results file")
    args = ap.parse_args(argv)
    before = load()
    body = PARTS[args.part](args)
    command = "python -m bench.scaleout " + " ".join(sys.argv[1:] if argv is None else argv)
    label = LABELS[args.part] + (f", shards of {args.shard}" if args.part == "scaling" else "")
    lines = section(label, command, before, body)
    print("\n".join(lines))
    if not args.dry:
        replace_section(OUT, HEAD, label, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
