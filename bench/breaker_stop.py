"""Benchmark (issue 9 done-when): a 1,000-request run against a SIMULATOR that fails every request
with the same 500 stops within a minute with exit 2 and the server's message, and a resume once the
simulator is healthy answers every request exactly once.

    .venv/bin/python -m bench.breaker_stop [--rows 1000] [--mode conversation|independent] [--parallel 1]

The simulator runs in its own process with `fail_rate 1.0` (every chat request answered 500 with
one message); `chunkwise run` runs as a subprocess through the real Prefect flow with the default
breaker threshold (5) and the default backoff (1 s doubling, jittered). Then the simulator's
`fail_rate` is set to 0 (POST /sim/config) and the same command resumes the run.
Results: bench/results/breaker_stop.md.
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
import threading
import time
from pathlib import Path

import httpx
import polars as pl

from bench.procs import RUN_ROOTS, publish
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import write_sample

RESULTS = Path(__file__).resolve().parent / "results" / "breaker_stop.md"


def run(argv: list[str], env: dict[str, str], url: str) -> tuple[int, float, float | None, str]:
    """(exit code, wall seconds, seconds from the first chat request the server saw to the exit, output)."""
    first: list[float] = []
    done = threading.Event()

    def watch() -> None:  # the first /api/chat the simulator records marks the end of start-up
        with httpx.Client(timeout=5.0) as client:
            while not done.is_set() and not first:
                if client.get(f"{url}/sim/stats?fingerprints=0").json()["requests"].get("/api/chat"):
                    first.append(time.perf_counter())
                done.wait(0.1)

    baseline = httpx.get(f"{url}/sim/stats?fingerprints=0").json()["requests"].get("/api/chat")
    watcher = threading.Thread(target=watch, daemon=True)
    if not baseline:
        watcher.start()
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    ended = time.perf_counter()
    done.set()
    return proc.returncode, ended - started, (ended - first[0]) if first else None, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--mode", default="conversation")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-breaker-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "requests.parquet"
        write_sample(data, args.rows, seed=0)
        options = SimOptions(port=0, parallel=args.parallel, fail_rate=1.0, answer_tokens=(8, 32))
        env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(tmp / "home"), "PREFECT_LOGGING_LEVEL": "WARNING",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
        with running_simulator(options, process=True) as sim:
            argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", "llama3.1:8b",
                    "--host", sim.url, "--mode", args.mode, "--parallel", str(args.parallel), "--num-ctx", "8192",
                    "--output-dir", str(tmp / "runs"), "--run-name", "breaker"]
            code1, wall1, sending1, out1 = run(argv, env, sim.url)
            failing = httpx.get(f"{sim.url}/sim/stats?fingerprints=0").json()
            httpx.post(f"{sim.url}/sim/config", json={"fail_rate": 0.0}).raise_for_status()
            code2, wall2, _, out2 = run(argv, env, sim.url)
            healthy = httpx.get(f"{sim.url}/sim/stats?fingerprints=0").json()
        results = pl.read_parquet(tmp / "runs" / "breaker" / "results.parquet") if code2 in (0, 1) else None
    # the CLI's own last line, not Prefect's task log lines
    message = next((line for line in reversed(out1.splitlines())
                    if "in a row with the same error" in line and "Task run" not in line), "")
    ok = int((results["status"] == "ok").sum()) if results is not None else None
    lines = [
        "# Circuit breaker: a server that fails every request the same way (SIMULATOR)",
        "",
        f"Machine: {platform.node()} ({os.cpu_count()} CPUs), {platform.python_version()}; "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Server: `chunkwise sim` (a simulator, not Ollama), "
        f"`fail_rate 1.0` then 0.",
        f"Command: `python -m bench.breaker_stop --rows {args.rows} --mode {args.mode} --parallel {args.parallel}`",
        "",
        "| | exit | wall time (s, process start to exit, Prefect start-up included) | /api/chat answers by status (cumulative) |",
        "|---|---|---|---|",
        f"| failing server, {args.rows} requests | {code1} | {wall1:.1f} | {json.dumps(failing['requests'].get('/api/chat'))} |",
        f"| resume, healthy server | {code2} | {wall2:.1f} | {json.dumps(healthy['requests'].get('/api/chat'))} |",
        "",
        f"The failing run stopped {sending1:.1f} s after the server received its first chat request "
        "(the rest of its wall time is Prefect's start-up and the run's setup on this 2-CPU machine).",
        "",
        f"Every request answered exactly once: max answers per prompt fingerprint "
        f"{healthy.get('max_answered_per_fingerprint')}, fingerprints answered more than once "
        f"{healthy.get('fingerprints_answered_more_than_once')}.",
        "",
        f"Message printed by the stopped run: `{message.strip()[:600]}`",
        "",
        f"After the resume: {ok} of {args.rows} requests answered (`status ok`).",
    ]
    publish(lines, RESULTS.with_name(f"breaker_stop_{args.mode}.md") if args.mode != "conversation" else RESULTS,
            write=not args.no_write)
    if code1 != 2 or code2 != 0 or ok != args.rows:
        raise SystemExit(f"unexpected: first run exit {code1}, resume exit {code2}, answered {ok}\n{out1[-3000:]}\n{out2[-3000:]}")


if __name__ == "__main__":
    main()
