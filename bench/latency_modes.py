"""Benchmark: server-slot utilisation and throughput of each mode against a simulator with
non-zero latency (goal: utilisation >= 97 % in each mode).

    .venv/bin/python -m bench.latency_modes [--rows 2000] [--parallel 4] [--decode-tps 1000]

The simulator runs in its own process with P slots, a prefill and a decode rate, and the attention
slow-down of long contexts (a token at context position p costs 1 + p / 131,072 times more, as
measured on an H100). Utilisation is the simulator's own accounting: time its slots were leased
over P x (last release - first lease). The same requests go through `chunkwise run` in each mode.
Results: bench/results/latency_modes.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.procs import RUN_ROOTS, publish
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import sample_system_prompt, write_sample

RESULTS = Path(__file__).resolve().parent / "results" / "latency_modes.md"


def tail_bound(results: Path, parallel: int) -> float:
    """Utilisation possible with zero overhead between requests, given that a conversation is one
    chunk on one slot: the chunks' server-reported busy times, list-scheduled in index order onto
    `parallel` slots (what the flow's worker pool does); the last round's stragglers are the loss."""
    busy = (pl.read_parquet(results).group_by("chunk").agg(
        (pl.col("prompt_eval_duration_ns") + pl.col("eval_duration_ns")).sum().alias("ns")).sort("chunk")["ns"].to_list())
    slots = [0] * parallel
    for ns in busy:
        slots[slots.index(min(slots))] += ns
    return sum(busy) / (parallel * max(slots))


def run_mode(mode: str, url: str, data: Path, system_file: Path, tmp: Path, parallel: int, num_ctx: int,
             chunk_size: int | None = None, name: str | None = None) -> tuple[float, dict]:
    name = name or mode
    env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(tmp / f"home-{mode}"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", "llama3.1:8b", "--host", url,
            "--mode", mode, "--num-ctx", str(num_ctx), "--parallel", str(parallel), "--num-predict", "512",
            "--system-prompt-file", str(system_file), "--output-dir", str(tmp / "runs"), "--run-name", name, "--json"]
    if chunk_size is not None:
        argv += ["--chunk-size", str(chunk_size)]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run exited {proc.returncode}: {proc.stdout[:1500]}\n{proc.stderr[-2000:]}")
    return wall, json.loads((tmp / "runs" / name / "stats.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1600)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--prefill-tps", type=float, default=20_000)
    ap.add_argument("--decode-tps", type=float, default=400)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cw-latency-") as tmp_name:
        tmp = Path(tmp_name)
        data, system_file = tmp / "requests.parquet", tmp / "system.txt"
        write_sample(data, args.rows, seed=0)
        system_file.write_text(sample_system_prompt(2400), encoding="utf-8")
        options = SimOptions(port=0, parallel=args.parallel, prefill_tps=args.prefill_tps, decode_tps=args.decode_tps,
                             load_ms=1000)
        runs = (("independent", 32_768, None), ("conversation", 128_000, None), ("conversation", 128_000, 25))
        for mode, num_ctx, chunk_size in runs:
            name = f"{mode}-{chunk_size or 'auto'}"
            with running_simulator(options, process=True) as sim:
                wall, stats = run_mode(mode, sim.url, data, system_file, tmp, args.parallel, num_ctx, chunk_size, name)
                sim_stats = sim.stats(fingerprints=False)
            slots = sim_stats["slots"]
            slots["tail_bound"] = (tail_bound(tmp / "runs" / name / "results.parquet", args.parallel)
                                   if mode == "conversation" else None)
            label = mode if chunk_size is None else f"{mode}, --chunk-size {chunk_size}"
            rows.append((label, num_ctx, wall, stats, slots, sim_stats))
    lines = [
        "# Modes under latency: server-slot utilisation and throughput",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, shared with other work (load average {os.getloadavg()[0]:.1f} at the end).",
        f"Command: `.venv/bin/python -m bench.latency_modes --rows {args.rows} --parallel {args.parallel} "
        f"--prefill-tps {args.prefill_tps:g} --decode-tps {args.decode_tps:g}`.",
        "",
        f"{args.rows:,} sample requests (mean prompt ~700 tokens), system prompt 2,400 tokens, simulator with "
        f"{args.parallel} slots, prefill {args.prefill_tps:,.0f} tok/s and decode {args.decode_tps:,.0f} tok/s per slot, "
        "attention slow-down 1 + context/131,072, model load 1 s. Utilisation is the simulator's leased slot time "
        "over slots x (last release - first lease). The bound is what zero overhead between requests would "
        "give: in conversation mode a chunk is one conversation on one slot, so the last round's stragglers "
        "leave slots idle (the chunks' reported busy times list-scheduled onto the slots); in independent mode "
        "the slots are shared request by request (n/a).",
        "",
        "| mode | num_ctx | chunks | slot utilisation | bound from chunk lengths | requests/s (slots' window) | "
        "prompt tokens evaluated | mean prompt tokens per request | latency p50 / p95 ms | whole command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, num_ctx, wall, stats, slots, _sim_stats in rows:
        n = stats["requests"]["succeeded"]
        lines.append(
            f"| {mode} | {num_ctx:,} | {stats['chunks']} | **{slots['utilisation']:.1%}** | "
            f"{'n/a' if slots['tail_bound'] is None else format(slots['tail_bound'], '.1%')} | "
            f"{n / slots['window_s']:.1f} | {stats['tokens']['prompt_evaluated']:,} | "
            f"{stats['tokens']['prompt_evaluated'] / max(n, 1):,.0f} | {stats['latency_ms']['p50']:.0f} / "
            f"{stats['latency_ms']['p95']:.0f} | {wall:.1f} s |"
        )
    lines += ["", "Every request was answered exactly once in every run: "
              + ", ".join(f"{m}: {s['answered_total']:,} answered, max {s['max_answered_per_fingerprint']} per request"
                          for m, _, _, _, _, s in rows) + "."]
    publish(lines, RESULTS, write=not args.no_write)


if __name__ == "__main__":
    main()
