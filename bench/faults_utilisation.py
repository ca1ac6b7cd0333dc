"""Benchmark: server-slot utilisation with and without faults (issue 13, item 1). SIMULATOR figures.

    python -m bench.faults_utilisation [--rows 600] [--code DIR --label before]

The setup of the side-by-side comparison with a batch library: a simulator with 4 slots, prefill
20,000 and decode 400 tokens/s per slot; the same 600 sample requests (seed 7); answers capped at
256 tokens; `chunkwise run --mode independent --parallel 4`, default retry backoff (1 s doubling).
Fault-free, then 10 % HTTP 500 and 5 % connection resets (drawn per request fingerprint, so the same
requests fail in every run). Utilisation is the simulator's own: leased slot time over
4 x (first lease -> last release). `--code DIR` runs the chunkwise found in DIR (e.g. a `git archive`
of an older commit) to get the before figures on the same machine; each `--label` is a section of
bench/results/faults_utilisation.md.
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

from bench.procs import RUN_ROOTS, replace_section
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import write_sample

RESULTS = Path(__file__).resolve().parent / "results" / "faults_utilisation.md"
REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are a concise assistant. Answer the request in plain prose."


def one_run(code: Path, url: str, data: Path, tmp: Path, name: str) -> tuple[float, dict]:
    env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PYTHONPATH": str(code), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    env.pop("PREFECT_API_URL", None)
    argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", "llama3.1:8b", "--host", url,
            "--mode", "independent", "--parallel", "4", "--num-ctx", "8192", "--num-predict", "256",
            "--system-prompt", SYSTEM, "--output-dir", str(tmp / "runs"), "--run-name", name, "--json"]
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"run {name} exited {proc.returncode}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, json.loads((tmp / "runs" / name / "stats.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--code", type=Path, default=REPO, help="directory of the chunkwise under test")
    ap.add_argument("--label", default="after")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cw-faults-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "requests.parquet"
        write_sample(data, args.rows, seed=7)
        base = dict(port=0, parallel=4, prefill_tps=20_000, decode_tps=400)
        for label, faults in (("fault-free", {}), ("10 % HTTP 500 + 5 % resets", {"fail_rate": 0.1, "reset_rate": 0.05})):
            with running_simulator(SimOptions(**base, **faults), process=True) as sim:
                wall, stats = one_run(args.code.resolve(), sim.url, data, tmp, label.split()[0].replace("%", ""))
                sim_stats = sim.stats(fingerprints=False)
            rows.append((label, wall, stats, sim_stats))
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.code, capture_output=True,
                         text=True).stdout.strip() or "(no git)"
    lines = [
        f"## {args.label}",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, code {args.code} {rev}. Machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, shared with other work (load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "| run | slot utilisation (simulator) | idle slot-s | window s | whole command s | requests ok / failed | "
        "request retries | faults met (500 / reset) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, wall, stats, s in rows:
        slots = s["slots"]
        idle = 4 * slots["window_s"] - slots["busy_s"]
        lines.append(
            f"| {label} | **{slots['utilisation']:.1%}** | {idle:.1f} | {slots['window_s']:.1f} | {wall:.1f} | "
            f"{stats['requests']['succeeded']} / {stats['requests']['failed']} | "
            f"{stats['retries']['request_retries']} | {s['faults'].get('error', 0)} / {s['faults'].get('reset', 0)} |")
    ratio = rows[1][3]["slots"]["utilisation"] / rows[0][3]["slots"]["utilisation"]
    lines += ["", f"Faulty / fault-free utilisation: **{ratio:.1%}** (goal >= 95 %).", ""]
    print("\n".join(lines))
    if args.no_write:
        return
    head = ["# Slot utilisation through faults (SIMULATOR figures)", "",
            "From `python -m bench.faults_utilisation` (see its docstring): 4 slots, prefill 20,000 and decode 400 "
            "tokens/s per slot, 600 requests, answers capped at 256 tokens, `--mode independent --parallel 4`.", ""]
    replace_section(RESULTS, head, args.label, lines)


if __name__ == "__main__":
    main()
