"""Benchmark: 256 requests in flight against one fast-engine host, both modes (issue 22 item 2). SIMULATOR figures.

    python -m bench.fast_engine [--rows 3000] [--modes independent conversation] [--stream auto|on|off]
                                [--code DIR] [--label NAME]

One simulator with the `fast-engine` preset (chunkwise/harness/sim/presets.py: 256 slots, 5,800 output
tokens/s at full batch, prefill 30,000 tokens/s), answers of 100-140 tokens (MLPerf's shape, ~48 req/s at
full batch), the sample requests (seed 7). Per mode one `chunkwise run --parallel 256` (independent: the
run's one sender pool; conversation: 256 conversations at once), Prefect's ephemeral API as a user gets it.

Reported per mode: the simulator's slot utilisation while requests remained to be sent (leased slot time
over 256 x first lease -> last lease: the client's share) and over the whole window (to the last release: it
adds the drain of the last answers, ~5 s at full batch, which no client can fill and which shrinks against a
longer run), requests per second over that window and over the whole command, the command's CPU time per
request (user + system of the command and every child it reaped, Prefect's API server included: the
client's cost on this machine, which the simulator shares), and the chunk tasks the run keeps open at once
(`chunkwise.run.session.chunk_workers`, from the run's chunk plan), the `chunkwise run` process's own CPU per
request and Prefect's API server's CPU per chunk, both between the first row's lease and the last release
(sampled from /proc every 0.5 s: `bench.procs.TreeCpu`). A conversation run that sized its chunks from the
server's count of a sample of its rows (`chunkwise.run.density`) sent that one request seconds before its first
row: the simulator's figures are then taken from the second lease on (`/sim/stats?skip_leases=1`). `--dump DIR`
keeps each run's simulator statistics, `slots.occupancy_per_s` among them (where the slots stood idle). The
simulator runs as its own process; on
2 shared cores client, simulator and Prefect compete, so a figure taken under load understates both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import RUN_ROOTS, TreeCpu, replace_section
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import write_sample
from chunkwise.params import RunParams
from chunkwise.run.session import chunk_workers
from chunkwise.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "fast_engine.md"
REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are a concise assistant. Answer the request in plain prose."
PARALLEL = 256


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(url: str, data: Path, tmp: Path, mode: str, stream: str = "auto", code: Path = REPO) -> dict[str, Any]:
    """One `chunkwise run` of the chunkwise found in `code` (its cwd and PYTHONPATH) against `url`."""
    env = {**os.environ, **RUN_ROOTS, "CHUNKWISE_STREAM": stream, "PREFECT_HOME": str(tmp / "prefect-home"),
           "PYTHONPATH": str(code),
           "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    env.pop("PREFECT_API_URL", None)
    argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", "llama3.1:8b", "--host", url,
            "--mode", mode, "--parallel", str(PARALLEL), "--num-ctx", "8192", "--num-predict", "256",
            "--system-prompt", SYSTEM, "--output-dir", str(tmp / "runs"), "--run-name", mode, "--json"]
    cpu0, started, started_ns = children_cpu_s(), time.perf_counter(), time.perf_counter_ns()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, cwd=code, env=env, stdout=out, stderr=err, text=True)
        with TreeCpu(child.pid) as sampled:
            child.wait()
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(argv, child.returncode, out.read(), err.read())
    wall, cpu = time.perf_counter() - started, children_cpu_s() - cpu0
    run_dir = tmp / "runs" / mode
    if proc.returncode not in (0, 1) or not (run_dir / "stats.json").exists():  # 1: some requests failed
        raise SystemExit(f"{mode} run exited {proc.returncode}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    stats = json.loads((run_dir / "stats.json").read_text())
    plan = json.loads((run_dir / "manifest.json").read_text())["chunk_plan"]
    workers = chunk_workers(RunParams(input_path=str(data), mode=mode, parallel=PARALLEL), Settings(),
                            int(plan["chunk_size"]))
    return {"wall": wall, "cpu": cpu, "stats": stats, "plan": plan, "workers": workers, "started_ns": started_ns,
            "tree": sampled, "pid": child.pid}


def window_cpu(result: dict[str, Any]) -> tuple[float, float]:
    """(CPU s of the `chunkwise run` process itself, CPU s of Prefect's API server) between the simulator's first
    lease and last release: the client's and the API's running cost, without either's start-up."""
    slots, sampled = result["sim"]["slots"], result["tree"]
    start = slots["first_lease_ns"]
    stop = slots["last_release_ns"]
    api = [p for p, cmd in sampled.commands.items()
           if p != result["pid"] and ("uvicorn" in cmd or ("prefect" in cmd and "server" in cmd))]
    if not api:
        print(f"no Prefect API server among the run's processes: {sorted(sampled.commands.values())}", file=sys.stderr)
    return sampled.between(result["pid"], start, stop), sum(sampled.between(p, start, stop) for p in api)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--modes", nargs="+", default=["independent", "conversation"])
    ap.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                    help="CHUNKWISE_STREAM for the runs (auto: whole answers at 256 in flight; on: one line per token)")
    ap.add_argument("--code", type=Path, default=REPO,
                    help="directory of the chunkwise under test (e.g. a `git archive` of an older commit)")
    ap.add_argument("--label", default="fast engine, 256 in flight")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--dump", type=Path, help="write each mode's simulator statistics here as <mode>.json "
                    "(`slots.occupancy_per_s`: where in the run the slots stood idle)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cw-fast-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "requests.parquet"
        write_sample(data, args.rows, seed=7)
        for mode in args.modes:
            with running_simulator(SimOptions(port=0, preset="fast-engine", answer_tokens=(100, 140)),
                                   process=True) as sim:
                result = one_run(sim.url, data, tmp, mode, args.stream, args.code.resolve())
                # a conversation run that sized its chunks from the server's count sent that one request first,
                # seconds before its first row (chunkwise.run.density): measured from the first row
                skip = 1 if result["plan"].get("sizing") else 0
                result["sim"] = sim.stats(fingerprints=False, skip_leases=skip)
                result["sim"]["slots"].update(result["sim"]["slots_after_skipped"])
            first = result["sim"]["slots"]["first_lease_ns"]  # the simulator's clock: CLOCK_MONOTONIC, as ours
            result["first_request_s"] = (first - result["started_ns"]) / 1e9
            rows.append((mode, result))
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / f"{mode}.json").write_text(json.dumps(result["sim"]))
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.code, capture_output=True,
                         text=True).stdout.strip() or f"{args.code} (no git)"
    lines = [
        f"## {args.label}",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, code {rev}. Machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, shared with other work (load average {os.getloadavg()[0]:.1f} at the "
        f"end). {args.rows} requests per mode, CHUNKWISE_STREAM={args.stream}. SIMULATOR figures.",
        "",
        "| mode | slot utilisation while sending (simulator) | whole window | sending s / window s | req/s in the "
        "window | command to first request s | whole command s | command CPU ms / request | client CPU ms / request "
        "in the window | Prefect API CPU ms / chunk in the window | chunks (size) | chunk tasks at once | "
        "ok / failed / rejected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in rows:
        slots, req = r["sim"]["slots"], r["stats"]["requests"]
        ok = req["succeeded"]
        client_s, api_s = window_cpu(r)
        lines.append(
            f"| {mode} | **{slots['utilisation_sending']:.1%}** | {slots['utilisation']:.1%} | {slots['sending_s']:.1f} / "
            f"{slots['window_s']:.1f} | {ok / slots['window_s']:.1f} | {r['first_request_s']:.1f} | "
            f"{r['wall']:.1f} | {1000 * r['cpu'] / max(1, ok):.1f} | {1000 * client_s / max(1, ok):.1f} | "
            f"{1000 * api_s / max(1, r['plan']['chunks']):.1f} | {r['plan']['chunks']} ({r['plan']['chunk_size']}) "
            f"| {r['workers']} | {ok} / {req['failed']} / {req['rejected']} |")
    lines.append("")
    print("\n".join(lines))
    if args.no_write:
        return
    head = ["# 256 requests in flight against one fast-engine host (SIMULATOR figures)", "",
            "From `python -m bench.fast_engine` (see its docstring). The goal (issue 22 item 2): slot utilisation "
            ">= 95 % in both modes. The window runs from the first slot lease to the last release; Prefect's "
            "start-up is outside it and inside the whole command.", ""]
    replace_section(RESULTS, head, args.label, lines)


if __name__ == "__main__":
    main()
