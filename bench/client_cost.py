"""Benchmark: the client's own cost per request. 30,000 requests at zero latency (the simulator in
its own process), 8 in flight, a short system prompt, independent mode: the whole `chunkwise run`
command next to a plain async httpx client that streams the same requests with the same
concurrency, and next to a plain client that does not stream (issue 13, item 6; goal: ratio
`chunkwise run` / plain streaming client <= 1.25).

    .venv/bin/python -m bench.client_cost [--rows 30000] [--parallel 8] [--label after] [--profile DIR]

At zero latency the wall time is what each client spends per request (plus the simulator's own
cost, the same for all three), so the ratio is the price of the ledger, checkpoints, retries,
progress and Prefect around each request. `--profile DIR` runs `chunkwise run` under py-spy
(`record --format raw`, the flow process and its children) and prints the heaviest functions; its
wall time is then not comparable and is not written. Results: bench/results/client_cost.md,
one section per `--label`. All figures are simulator figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

from bench.compare import plain_client, run_pipeline
from bench.procs import replace_section
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import sample_system_prompt, write_sample
from chunkwise.store.ledger import STAMP, decode_line

RESULTS = Path(__file__).resolve().parent / "results" / "client_cost.md"
HEAD = ["# Client cost per request: `chunkwise run` vs a plain async httpx client (simulator figures)", "",
        "Issue 13 item 6. Zero-latency simulator in its own process, independent mode, a short system prompt;",
        "goal: `chunkwise run` / plain streaming client <= 1.25 at 30,000 requests.", ""]


def _stacks(raw: Path) -> list[tuple[str, list[str], int]]:
    """(process, frame names, samples) per line of a py-spy `record --format raw` file (one collapsed
    stack per line, `frame;frame;... count`, the first frame naming the process)."""
    out = []
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            process, *frames = stack.split(";")
            out.append((process, [f"{f.split(' (')[0]} ({f.split(' (')[-1].rsplit(':', 1)[0]})" for f in frames],
                        int(count)))
    return out


def top_functions(raw: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, self %, total %) of the `n` functions with the most samples of their own in a
    py-spy `record --format raw --gil` file: with `--gil` a sample is a moment some thread held the
    GIL, so the percentages are shares of the Python CPU time of `chunkwise run` and its children."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for process, names, k in _stacks(raw):
        kind = "prefect server" if "prefect" in process and "server" in process else "chunkwise run"
        names = names or [f"<{kind}: native>"]
        samples += k
        own[names[-1]] += k
        for name in set(names):
            total[name] += k
    return [(f, 100 * c / samples, 100 * total[f] / samples) for f, c in own.most_common(n)] if samples else []


def top_inclusive(raw: Path, n: int = 25) -> list[tuple[str, float]]:
    """(function, total %) of the `n` functions on the most samples' stacks (see `top_functions`)."""
    total: Counter[str] = Counter()
    samples = 0
    for _, names, k in _stacks(raw):
        samples += k
        for name in set(names):
            total[name] += k
    return [(f, 100 * c / samples) for f, c in total.most_common(n)] if samples else []


def answer_span(ledger_dir: Path) -> tuple[float, float]:
    """The first and last ledger write times (Unix s) of a run: where its fixed cost lies."""
    stamps = [decode_line(line)[STAMP] for path in ledger_dir.glob("chunk-*.jsonl")  # type: ignore[index]
              for line in path.read_bytes().splitlines(keepends=True)]
    return min(stamps), max(stamps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--system-tokens", type=int, default=40, help="length of the short system prompt")
    ap.add_argument("--label", default="after", help="section of the results file to write")
    ap.add_argument("--profile", type=Path, help="run chunkwise under py-spy, write its raw profile here")
    ap.add_argument("--no-write", action="store_true", help="print only; don't update the results file")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cw-cost-") as tmp:
        tmp_path = Path(tmp)
        data, system_file = tmp_path / "requests.parquet", tmp_path / "system.txt"
        write_sample(data, args.rows, seed=0)
        system = sample_system_prompt(args.system_tokens)
        system_file.write_text(system, encoding="utf-8")
        prompts = pl.read_parquet(data, columns=["prompt"])["prompt"].to_list()
        options = SimOptions(port=0, parallel=args.parallel, max_queue=4096)
        with running_simulator(options, process=True) as sim:
            prefix = None
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                prefix = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--gil", "--subprocesses",
                          "--rate", "100",
                          "-o", str(args.profile / "chunkwise_run.txt"), "--"]
            else:
                plain_s = asyncio.run(plain_client(sim.url, system, prompts, args.parallel))
                plain_answered = sim.stats(fingerprints=False)["answered_total"]
                sim.reset()
                plain_nostream_s = asyncio.run(plain_client(sim.url, system, prompts, args.parallel, stream=False))
                sim.reset()
            began = time.time()
            wall, rss = run_pipeline(sim.url, data, system_file, tmp_path / "runs", args.parallel, tmp_path / "home",
                                     prefix=prefix)
            ended = time.time()
            stats = sim.stats(fingerprints=False)
        run_stats = json.loads((tmp_path / "runs" / "bench" / "stats.json").read_text())
        first, last = answer_span(tmp_path / "runs" / "bench" / "ledger")
    if args.profile:
        print(f"chunkwise run under py-spy: {wall:.1f} s (not comparable)")
        print("heaviest by own samples:")
        for name, self_pct, total_pct in top_functions(args.profile / "chunkwise_run.txt", 25):
            print(f"{self_pct:5.1f} % self {total_pct:5.1f} % total  {name}")
        print("heaviest by samples on the stack:")
        for name, total_pct in top_inclusive(args.profile / "chunkwise_run.txt", 60):
            print(f"{total_pct:5.1f} % total  {name}")
        return
    active = run_stats["throughput"]["active_seconds"]
    section = [
        f"## {args.label}",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores (this box, shared), "
        f"Python {platform.python_version()}; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after.",
        f"Command: `.venv/bin/python -m bench.client_cost --rows {args.rows} --parallel {args.parallel} "
        f"--label {args.label}`. System prompt {args.system_tokens} tokens.",
        "",
        "| | wall | requests/s | answered by the simulator |",
        "|---|---|---|---|",
        f"| plain async httpx client, streaming | {plain_s:.1f} s | {args.rows / plain_s:,.0f} | {plain_answered:,} |",
        f"| plain async httpx client, not streaming | {plain_nostream_s:.1f} s | {args.rows / plain_nostream_s:,.0f} | |",
        f"| `chunkwise run` (whole command) | {wall:.1f} s | {args.rows / wall:,.0f} | {stats['answered_total']:,} "
        f"(max per request {stats['max_answered_per_fingerprint']}) |",
        "",
        f"- **Ratio `chunkwise run` / plain streaming: {wall / plain_s:.2f}** (goal <= 1.25); "
        f"/ plain not streaming: {wall / plain_nostream_s:.2f}.",
        f"- Of the run's wall time, {active:.1f} s were its active time (first request to last answer, from "
        f"stats.json) and {wall - active:.1f} s the fixed cost around it (Prefect's start, staging, aggregation); "
        f"active time / plain streaming: {active / plain_s:.2f}.",
        f"- From the ledger's write times: command -> first answer {first - began:.1f} s, first -> last answer "
        f"{last - first:.1f} s, last answer -> command exited {ended - last:.1f} s.",
        f"- Run statistics: {run_stats['requests']['succeeded']:,} succeeded, {run_stats['requests']['failed']} failed, "
        f"{run_stats['chunks']} chunks; peak RSS {rss.peak_self:.0f} MiB (flow process).",
        "",
    ]
    print("\n".join(section))
    if not args.no_write:
        replace_section(RESULTS, HEAD, args.label, section)


if __name__ == "__main__":
    main()
