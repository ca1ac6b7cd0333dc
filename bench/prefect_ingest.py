"""Benchmark: how fast a local SQLite Prefect server records what the batch flow sends it, next to
how fast the flow produces it (docs/ui.md quotes the result).

    .venv/bin/python -m bench.prefect_ingest [--chunks 1532]

A `prefect server start` (SQLite, temporary home, loopback, no UI) and the simulator (own process,
instant answers) are started; `chunkwise run` (a child process, PREFECT_API_URL at that server,
INFO logs to the API as in production) pushes `--chunks` single-request chunks, so the flow produces
task runs as fast as Prefect's per-task overhead allows, far faster than a real run. This process
polls the server once a second for the run's chunk task runs in a final state. Then the same command
again: every chunk is served from its checkpoint (what a Retry or re-run of a finished run sends).

Reported per pass: the client's wall time and chunk rate, the server's recording rate while the
client runs and after, how long recording lags behind the client, task runs never recorded, and the
server's "queue is full" drops. Results: bench/results/prefect_ingest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import RUN_ROOTS
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from tests.support.pipeline_helpers import write_requests
from tests.support.ui_helpers import child_env, prefect_server

RESULTS = Path(__file__).resolve().parent / "results" / "prefect_ingest.md"
STALL_S = 120.0


def recorded_chunks(api_url: str, flow_run_id) -> int:
    body = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}},
            "task_runs": {"name": {"like_": "chunk-"}, "state": {"type": {"any_": ["COMPLETED"]}}}}
    response = httpx.post(f"{api_url}/task_runs/count", json=body, timeout=30.0, trust_env=False)
    response.raise_for_status()
    return int(response.json())


def poll(api_url, client, proc, known, started, chunks, log) -> tuple[list[tuple[float, int]], float]:
    """(seconds since start, chunk task runs recorded) once a second, and the client's wall time."""
    from prefect.client.schemas.sorting import FlowRunSort

    flow_run_id, client_s, series, last_change = None, None, [], time.monotonic()
    while True:
        time.sleep(1.0)
        now = time.monotonic() - started
        if client_s is None and proc.poll() is not None:
            client_s = now
            if proc.returncode != 0:
                raise RuntimeError(f"chunkwise run exited {proc.returncode}: {log.read_text()[-2000:]}")
        if flow_run_id is None:
            new = [r for r in client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC) if r.id not in known]
            flow_run_id = new[0].id if new else None
            continue
        count = recorded_chunks(api_url, flow_run_id)
        if not series or count != series[-1][1]:
            last_change = time.monotonic()
        series.append((now, count))
        if client_s is not None and (count >= chunks or time.monotonic() - last_change > STALL_S):
            return series, client_s


def one_pass(api_url: str, cmd: list[str], env: dict, chunks: int, log: Path) -> dict:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        known = {r.id for r in client.read_flow_runs()}
        started = time.monotonic()
        with open(log, "ab") as out:  # a file, not a pipe: INFO logs would fill a pipe and block the child
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            series, client_s = poll(api_url, client, proc, known, started, chunks, log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def at(t: float) -> int:
        return max([c for s, c in series if s <= t] or [0])

    done = series[-1][1]
    all_at = next((s for s, c in series if c >= chunks), None)
    during = at(client_s)
    return {"client_s": client_s, "client_rate": chunks / client_s, "recorded_during": during,
            "rate_during": during / client_s, "recorded": done, "all_at": all_at,
            "lag_s": None if all_at is None else all_at - client_s,
            "rate_after": None if all_at is None or all_at <= client_s else (chunks - during) / (all_at - client_s),
            "overall_rate": None if all_at is None else chunks / all_at}


def report(passes: dict, chunks: int, drops: int, argv: list[str]) -> str:
    def f(v, spec=".1f"):
        return "not reached" if v is None else format(v, spec)

    rows = "\n".join(
        f"| {name} | {p['client_s']:.1f} | {p['client_rate']:.1f} | {p['recorded_during']} ({p['rate_during']:.1f}/s) | "
        f"{f(p['rate_after'])} | {f(p['lag_s'])} | {f(p['overall_rate'])} | {chunks - p['recorded']} |"
        for name, p in passes.items())
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""# Prefect server ingestion (SQLite) vs what the batch flow produces

`{' '.join(['python -m bench.prefect_ingest', *argv])}`, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC,
{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average after the run {load}.

A `prefect server start` on loopback (SQLite, fresh database, no UI); `chunkwise run` in a child
process pushes {chunks:,} chunks of one request each through the instant simulator (4 chunk workers,
INFO logs to the API). "Recorded" = chunk task runs the API returns in state Completed, polled
every second. Second pass: the same command again, every chunk served from its checkpoint (what
Prefect's Retry or a re-run of a finished run sends).

| pass | client wall, s | chunks/s over the client wall | recorded when the client exited | recorded/s after it exited | recording lag after the client, s | chunks/s end to end | never recorded |
|---|---|---|---|---|---|---|---|
{rows}

Server log lines "queue is full" (dropped events): {drops}.

A real run produces far less: 1,532 chunks of ~111 requests, each chunk minutes of GPU time, is about
one chunk task run (plus a few log lines and at most one progress update per second) every few
seconds to minutes, orders of magnitude under the rates above. Only runs that finish chunks in
milliseconds (the simulator at instant rates, or a Retry/re-run where every chunk comes from its
checkpoint) outrun the server; the run itself is unaffected (results and checkpoints are files), only
the UI's history lags or, past the server's 10,000-message queue, loses task runs.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1532)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prefect-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        source = write_requests(tmp / "requests.parquet", args.chunks, prompt_words=8)
        with prefect_server(tmp / "server-home", log=tmp / "server.log") as api_url, \
                running_simulator(SimOptions(parallel=4), process=True) as sim:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            env = child_env(tmp / "client-home", api_url, PREFECT_LOGGING_LEVEL="INFO", **RUN_ROOTS)
            cmd = [sys.executable, "-m", "chunkwise", "run", "--input", str(source), "--host", sim.url,
                   "--output-dir", str(tmp / "runs"), "--run-name", "ingest", "--mode", "independent",
                   "--chunk-size", "1", "--parallel", "4", "--num-ctx", "8192", "--system-prompt", "Be terse."]
            passes = {}
            with temporary_settings({PREFECT_API_URL: api_url}):
                for name in ("requests sent", "all from checkpoints"):
                    passes[name] = one_pass(api_url, cmd, env, args.chunks, tmp / "client.log")
                    print(name, passes[name], flush=True)
        drops = (tmp / "server.log").read_text(errors="replace").count("queue is full")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report(passes, args.chunks, drops, argv or sys.argv[1:]))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
