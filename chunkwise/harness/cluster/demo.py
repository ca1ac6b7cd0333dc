"""`make cluster-demo`: distributed mode on this machine, with simulators standing in for GPU hosts.

Starts PostgreSQL, a Prefect server on it, the work pool and the shard deployment, three simulator
processes with real-time rates and three `chunkwise worker`s (one per simulator), then runs 3,000
requests with `chunkwise run --pool chunkwise-gpu` and prints the per-host table and the results
path. Everything listens on 127.0.0.1; every process it started is stopped at the end. The run
directory is kept under `--output-dir` (default runs/); the server's and PostgreSQL's files live in
a temporary directory that is removed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from chunkwise.harness.cluster.local import SIM_ARGS, cleanup_tree, make_base, start_cluster
from chunkwise.store.layout import RunPaths


def write_requests(path: Path, n: int) -> Path:
    """`n` short, distinct requests (ids d00000..)."""
    pl.DataFrame({"id": [f"d{i:05d}" for i in range(n)],
                  "prompt": [f"Request {i}: summarise item {i * 7 % 997} in one line." for i in range(n)]}
                 ).write_parquet(path)
    return path


def host_table(stats: dict[str, Any]) -> str:
    cols = ("host", "requests", "ok", "prompt_tokens", "output_tokens", "busy_s", "req_per_s", "shards",
            "gpu_peak_mib", "cpu_spill", "digest_check")
    rows = [[str(r.get(c)) for c in cols] for r in stats.get("hosts", [])]
    totals = ["total", *(str(sum(r[c] for r in stats["hosts"])) for c in cols[1:5]), *[""] * (len(cols) - 5)]
    widths = [max(len(x) for x in col) for col in zip(cols, *rows, totals, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(cols), *(line(r) for r in rows), line(totals)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--shard-requests", type=int, default=300)
    ap.add_argument("--output-dir", default="runs")
    args = ap.parse_args(argv)
    base = make_base()
    shared = Path(args.output_dir)
    print("starting PostgreSQL, a Prefect server, 3 simulated hosts and their workers on 127.0.0.1 ...", flush=True)
    cluster = start_cluster(base, [[*SIM_ARGS, "--fault-seed", str(k)] for k in range(3)], shared=shared)
    try:
        src = write_requests(base / "requests.parquet", args.requests)
        name = time.strftime("cluster-demo-%Y%m%dT%H%M%SZ", time.gmtime())
        print(f"running {args.requests} requests across 3 hosts (shards of {args.shard_requests}) ...", flush=True)
        started = time.monotonic()
        done = cluster.run_parent(src, name, "--shard-requests", str(args.shard_requests), timeout_s=1800,
                                  chunk_size=20)
        assert isinstance(done, subprocess.CompletedProcess)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        stats = json.loads(RunPaths(cluster.shared / name).stats.read_text())
        print(f"\nper host (simulated hosts; wall {time.monotonic() - started:.0f} s):")
        print(host_table(stats))
        print(f"\nresults: {stats['run']['results']}")
        return 0
    finally:
        cluster.close()
        cleanup_tree(base)


if __name__ == "__main__":
    sys.exit(main())
