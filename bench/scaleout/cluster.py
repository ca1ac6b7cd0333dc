"""The loopback cluster a part runs on (`chunkwise.harness.cluster.local`), and what its simulators counted."""

from __future__ import annotations

import os
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from chunkwise.harness.cluster.local import SIM_ARGS, Cluster, cleanup_tree, make_base, start_cluster, stop


def three_hosts() -> list[list[str]]:
    """Three simulated hosts with the same rates (only the answer-length seed differs)."""
    return [[*SIM_ARGS, "--fault-seed", str(k)] for k in range(3)]


def write_requests(path: Path, n: int, salt: str) -> Path:
    """`n` distinct requests (the salt keeps fingerprints apart between runs on one cluster)."""
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
    """Per request fingerprint, summed over the live simulators: answers (or, key="received", receipts:
    every chat/generate body the simulator parsed, answered or not; chunkwise/harness/sim/stats.py)."""
    total: Counter[str] = Counter()
    for host in cluster.hosts:
        if host.sim is not None and host.sim.poll() is None:
            for fp, v in host.stats().get("fingerprints", {}).items():
                total[fp] += v[key]
    return total


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
