"""The throughput parts: E(N) against the number of hosts (`scaling`), idle between shards and the
tail against shard size (`shards`); `measured_run` is one parent run with its figures."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from bench.scaleout.cluster import answered, cluster_of, reset_sims, three_hosts, use_hosts, write_requests
from bench.scaleout.report import api_cell, fmt, parts_cell
from bench.scaleout.timing import ApiProbe, gap_breakdown, shard_timing
from chunkwise.harness.cluster.local import Cluster
from chunkwise.results.stats import host_rows_table


def measured_run(cluster: Cluster, n: int, name: str, shard: int) -> dict[str, Any]:
    """One parent run of `n` requests in shards of `shard`, chunks of 20, with its figures."""
    reset_sims(cluster)
    src = write_requests(cluster.base / f"{name}.parquet", n, name)
    with ApiProbe(cluster.api_url, cluster.auth_headers) as probe:
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
        row["gap_parts"] = gap_breakdown(cluster.api_url, name, cluster.shared / name, cluster.auth_headers)
    except Exception as exc:  # noqa: BLE001 (an optional figure: the run's own figures stand without it)
        row["gap_parts"] = None
        print(f"gap breakdown unavailable: {exc!r}", file=sys.stderr)
    row["twice"] = sum(1 for c in answered(cluster).values() if c > 1)
    print(json.dumps(row, default=str), flush=True)
    return row


def idle_cell(r: dict[str, Any]) -> str:
    """Idle between shards (worker + process start) and chunk to chunk (adds the shard's own start)."""
    return f"{r['idle_between']:.1%} / {r['idle_chunks']:.1%}"


def part_scaling(args: argparse.Namespace) -> list[str]:
    rows = []
    with cluster_of(three_hosts()) as cluster:
        for n_hosts in args.hosts:
            use_hosts(cluster, n_hosts)
            rows.append(measured_run(cluster, args.per_host * n_hosts, f"n{n_hosts}", args.shard))
    one = rows[0]["requests"] / rows[0]["window_s"]
    one_wall = rows[0]["requests"] / rows[0]["wall_s"]
    body = [f"{args.per_host} requests per host, shards of {args.shard} requests (~{args.shard / 6:.0f} s of one "
            "host's work), chunks of 20.", "",
            "| hosts | requests | shard window s | parent wall s | req/s window | E(N) window | req/s wall | "
            "E(N) wall | shards per host | idle between shards / chunk to chunk | gap s: report / pickup / spawn / "
            "enter | tail s | host req/s (busy) | host rows add up | API ms p50 / p95 / max |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n, rps, rps_wall = r["hosts_used"], r["requests"] / r["window_s"], r["requests"] / r["wall_s"]
        body.append(f"| {n} | {r['requests']} | {r['window_s']:.1f} | {r['wall_s']:.1f} | {rps:.2f} | "
                    f"{rps / (n * one):.2f} | {rps_wall:.2f} | {rps_wall / (n * one_wall):.2f} | "
                    f"{r['shards_per_host']} | {idle_cell(r)} | {parts_cell(r)} | {r['tail_s']:.1f} | "
                    f"{r['host_rps']} | {r['adds_up']} | {api_cell(r)} |")
    body += ["", "Answered more than once (summed over the simulators' `/sim/stats`): "
             + ", ".join(f"{r['hosts_used']} hosts {r['twice']}" for r in rows) + "."]
    return body


def part_shards(args: argparse.Namespace) -> list[str]:
    rows = []
    with cluster_of(three_hosts()) as cluster:
        for size in args.sizes:
            rows.append(measured_run(cluster, args.requests, f"s{size}", size))
    body = [f"3 hosts, {args.requests} requests, chunks of 20.", "",
            "| shard requests | shard run s (mean) | shards per host | shard window s | parent wall s | "
            "gap between shards s (mean) | gap: report / pickup / spawn / enter s | chunk to chunk s (mean) | "
            "idle between shards / chunk to chunk | lead-in s | tail s | busy share per host | "
            "API ms p50 / p95 / max | answered twice |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        busy = ", ".join(f"{v:.0%}" for v in r["busy_share"].values())
        body.append(f"| {r['shard']} | {r['shard_mean_s']:.1f} | {r['shards_per_host']} | {r['window_s']:.1f} | "
                    f"{r['wall_s']:.1f} | {fmt(r['gap_mean_s'])} | {parts_cell(r)} | {fmt(r['chunk_gap_mean_s'])} | "
                    f"{idle_cell(r)} | {r['lead_in_s']:.1f} | {r['tail_s']:.1f} | {busy} | {api_cell(r)} | "
                    f"{r['twice']} |")
    return body
