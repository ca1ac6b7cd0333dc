"""Benchmark: start-up, the time from the `chunkwise run` command to the first request the server sees.

    python -m bench.startup [--rows 600] [--repeat 3] --label "after: ..."

The simulator runs in its own process; this script spawns `chunkwise run` and polls `/sim/stats`
every 50 ms until the first `/api/chat` request has arrived (so that figure is accurate to ~50 ms; polling
every 10 ms took enough CPU from the run, on 2 shared cores, to delay it by up to a second):
that first request is the model load (an empty chat, `chunkwise.run.preload`). The first request of
the first chunk is timed by the simulator itself: its first slot lease (`first_lease_ns`, the
simulator's CLOCK_MONOTONIC, the same clock as this script's `perf_counter_ns`), taken as the
request is received when a slot is free, as it is at the start; the simulator is reset before each
run. One unmeasured run first creates the Prefect home's database (as on any machine after its first
run); each measured run is a new run directory. `PREFECT_API_URL` is unset: Prefect's temporary API
starts with each run, as for a user without a Prefect server. Each `--label` is a section of
bench/results/startup.md (a section with the same label is replaced), so before and after sit side
by side. Figures are against the simulator; the start-up path does not depend on the server's speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import RUN_ROOTS, replace_section
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import write_sample

RESULTS = Path(__file__).resolve().parent / "results" / "startup.md"
REPO = Path(__file__).resolve().parents[1]


def chat_requests(url: str, client: httpx.Client) -> int:
    stats = client.get(f"{url}/sim/stats", params={"fingerprints": "0"}).json()
    return sum(stats["requests"].get("/api/chat", {}).values())


def one_run(url: str, data: Path, tmp: Path, name: str, code: Path = REPO) -> tuple[float, float, float]:
    """(seconds to the first chat request, to the first chunk's first request, for the whole command) of the
    chunkwise in `code`."""
    env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PYTHONPATH": str(code)}
    env.pop("PREFECT_API_URL", None)
    argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", "llama3.1:8b", "--host", url,
            "--mode", "independent", "--parallel", "4", "--num-ctx", "8192", "--num-predict", "256",
            "--output-dir", str(tmp / "runs"), "--run-name", name]
    with httpx.Client(timeout=5) as client:
        client.post(f"{url}/sim/reset").raise_for_status()
        before = chat_requests(url, client)
        started_ns = time.perf_counter_ns()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = None
        while proc.poll() is None:
            if first is None and chat_requests(url, client) > before:
                first = time.perf_counter() - started
            time.sleep(0.05)
        wall = time.perf_counter() - started
        out = proc.stdout.read() if proc.stdout else ""
        lease = client.get(f"{url}/sim/stats", params={"fingerprints": "0"}).json()["slots"].get("first_lease_ns")
    if proc.returncode not in (0, 1) or first is None or lease is None:
        raise SystemExit(f"run {name} exited {proc.returncode}: {out[-3000:]}")
    return first, (lease - started_ns) / 1e9, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--label", default="the current code (make bench)",
                    help="section title, e.g. 'before' or 'after: ...' (default: the current code (make bench))")
    ap.add_argument("--before", type=Path, help="also run the chunkwise in this directory (e.g. a `git archive` of "
                    "an older commit), alternating with this one, so both see the same machine load")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    codes = {"this commit": REPO} if args.before is None else {"before": args.before.resolve(), "this commit": REPO}
    firsts: dict[str, list[float]] = {k: [] for k in codes}
    chunks: dict[str, list[float]] = {k: [] for k in codes}
    walls: dict[str, list[float]] = {k: [] for k in codes}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cw-startup-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "requests.parquet"
        write_sample(data, args.rows, seed=7)
        # fast answers: the figure of interest is the start, not the run
        options = SimOptions(port=0, parallel=4, prefill_tps=400_000, decode_tps=20_000, load_ms=0)
        with running_simulator(options, process=True) as sim:
            one_run(sim.url, data, tmp, "warm-up")
            for i in range(args.repeat):
                for j, (key, code) in enumerate(codes.items()):
                    first, chunk, wall = one_run(sim.url, data, tmp, f"r{i}-{j}", code)
                    firsts[key].append(first)
                    chunks[key].append(chunk)
                    walls[key].append(wall)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                         text=True).stdout.strip()
    section = [
        f"## {args.label}",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {rev}. Machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, shared with other work (load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after).",
        f"Command: `python -m bench.startup --rows {args.rows} --repeat {args.repeat} --label '{args.label}'"
        + (f" --before {args.before}`" if args.before else "`") + " (runs alternate between the two codes).",
        "",
        "| code | command -> first request (the model load), median | runs | command -> first chunk's first "
        "request, median | runs | whole command (simulator), median | runs |",
        "|---|---|---|---|---|---|---|",
    ]

    def cells(values: list[float], bold: bool = False) -> str:
        median = f"{statistics.median(values):.2f} s"
        return (f"**{median}**" if bold else median) + " | " + ", ".join(f"{x:.2f}" for x in values)

    for key in codes:
        section.append(f"| {key} | {cells(firsts[key])} | {cells(chunks[key], bold=True)} | {cells(walls[key])} |")
    section.append("")
    print("\n".join(section))
    if args.no_write:
        return
    head = ["# Start-up: from `chunkwise run` to the first request", "",
            "From `python -m bench.startup` (see its docstring). Simulator figures; the start-up path does not "
            "depend on the server's speed. A fresh Prefect home's first start (database creation) is excluded.", ""]
    replace_section(RESULTS, head, args.label, section)


if __name__ == "__main__":
    main()
