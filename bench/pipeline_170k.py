"""Benchmark: 170,000 requests through the whole flow against the zero-latency simulator, next to a
plain async httpx client sending the same requests to the same simulator.

Goals (issue #3): wall-time ratio pipeline / plain client <= 1.25; pipeline peak RSS <= 1 GiB.

    .venv/bin/python -m bench.pipeline_170k [--rows 170000] [--parallel 4]

The simulator runs as its own process (its own core); the pipeline runs as `chunkwise run` in a
child process (independent mode, the system prompt first in every request, `parallel` requests in
flight) whose whole wall time counts: Prefect's ephemeral API start, staging the input, 1,532 chunk
tasks, aggregation. The plain client sends exactly the same JSON bodies with the same
concurrency and reads the streamed answers line by line, and nothing else: no ledger, no
checkpoints, no Prefect. Results: bench/results/pipeline_170k.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.compare import plain_client, run_pipeline
from bench.procs import publish
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import sample_system_prompt, write_sample

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline_170k.md"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=170_000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--no-write", action="store_true", help="print only; don't update the results file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        tmp_path = Path(tmp)
        data, system_file = tmp_path / "requests.parquet", tmp_path / "system.txt"
        t0 = time.perf_counter()
        write_sample(data, args.rows, seed=0)
        gen_s = time.perf_counter() - t0
        system = sample_system_prompt(2400)
        system_file.write_text(system, encoding="utf-8")
        prompts = pl.read_parquet(data, columns=["prompt"])["prompt"].to_list()
        options = SimOptions(port=0, parallel=args.parallel, max_queue=4096)
        with running_simulator(options, process=True) as sim:
            plain_s = asyncio.run(plain_client(sim.url, system, prompts, args.parallel))
            plain_answered = sim.stats(fingerprints=False)["answered_total"]
            del prompts
            sim.reset()
            wall, rss = run_pipeline(sim.url, data, system_file, tmp_path / "runs", args.parallel, tmp_path / "home")
            stats = sim.stats(fingerprints=False)
        run_stats = json.loads((tmp_path / "runs" / "bench" / "stats.json").read_text())
    ratio = wall / plain_s
    lines = [
        "# 170K requests: whole flow vs a plain async httpx client",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores, "
        f"{platform.python_version()}, shared with other work (load average {os.getloadavg()[0]:.1f} at the end).",
        f"Command: `.venv/bin/python -m bench.pipeline_170k --rows {args.rows} --parallel {args.parallel}`.",
        "",
        f"Input: {args.rows:,} sample requests (generated in {gen_s:.1f} s), system prompt 2,400 tokens, "
        f"independent mode, parallel {args.parallel}, simulator at zero latency in its own process, streamed answers.",
        "",
        "| | wall | requests/s | answered by the simulator |",
        "|---|---|---|---|",
        f"| plain async httpx client | {plain_s:.1f} s | {args.rows / plain_s:,.0f} | {plain_answered:,} |",
        f"| `chunkwise run` (whole command) | {wall:.1f} s | {args.rows / wall:,.0f} | {stats['answered_total']:,} "
        f"(max per request {stats['max_answered_per_fingerprint']}) |",
        "",
        f"- **Ratio pipeline / plain: {ratio:.2f}** (goal <= 1.25).",
        f"- **Pipeline peak RSS: {rss.peak_self:.0f} MiB** for the flow process (goal <= 1,024 MiB); "
        f"{rss.peak_tree:.0f} MiB with Prefect's ephemeral API server (a child process).",
        f"- Run statistics: {run_stats['requests']['succeeded']:,} succeeded, {run_stats['requests']['failed']} failed, "
        f"{run_stats['chunks']} chunks, latency p50 {run_stats['latency_ms']['p50']} ms, "
        f"active time {run_stats['throughput']['active_seconds']} s.",
    ]
    publish(lines, RESULTS, write=not args.no_write)


if __name__ == "__main__":
    main()
