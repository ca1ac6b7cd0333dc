"""The ceiling part: how fast one shard flow process sends at zero latency, and what one parent
process pays per shard (launch, state reads)."""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.scaleout.cluster import cluster_of, use_hosts
from bench.scaleout.throughput import measured_run
from chunkwise.harness.cluster.local import Cluster


def parent_costs(cluster: Cluster, count: int) -> dict[str, float]:
    """Launch `count` shard runs through the parent's dispatcher with no worker polling, then time the
    parent's poll (one state read per outstanding shard, and one filtered read for all)."""
    os.environ.update({k: v for k, v in cluster.client_env.items() if k.startswith("PREFECT_")})
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

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
    t = time.perf_counter()
    found = dispatcher._client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in ids])), limit=count)
    batch = time.perf_counter() - t
    assert len(found) == count, (len(found), count)
    return {"batch_s": batch, "launch_ms": statistics.median(launch) * 1000,
            "launch_p95_ms": sorted(launch)[int(0.95 * (count - 1))] * 1000, "cycle_s": cycle,
            "read_ms": cycle / count * 1000, "count": count}


def part_ceiling(args: argparse.Namespace) -> list[str]:
    zero = ["--parallel", "4", "--answer-tokens", "8:24"]
    with cluster_of([zero], parallel=4) as cluster:
        row = measured_run(cluster, args.zero_requests, "zero", args.zero_requests)
        use_hosts(cluster, 0)
        costs = parent_costs(cluster, args.shards)
    rps = row["requests"] / row["window_s"]
    per_shard = costs["read_ms"] / 1000
    return [
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
