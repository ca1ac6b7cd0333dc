"""Shards sized by time and dispatched ahead against fast-engine hosts (issue 22 item 3) ->
bench/results/shards_ahead.md. SIMULATOR figures.

    python -m bench.scaleout.ahead --hosts 1 [--per-host 6000] [--shard-seconds 60] [--before] [--rate-scale 1]

One invocation is one run: its own loopback cluster (`chunkwise.harness.cluster.local`: PostgreSQL, a
Prefect server, `--hosts` simulators with the `fast-engine` preset and answers of 100-140 tokens, about 48
requests/s each at 256 in flight, and one `chunkwise worker --parallel 256` per simulator), one parent run
of `--per-host` x hosts requests in chunks of 100, then the figures, appended to
bench/results/shards_ahead.json (one row per invocation, kept) and the table in the .md rebuilt from it.
Workers run with `--shards-at-once 2` (the default); `--before` runs the previous behaviour for comparison:
one shard run at a time (`--shards-at-once 1`) and fixed shards of 900 requests (the old default). Each
invocation takes 2-5 minutes on this machine's 2 cores (cluster start ~60 s); `--per-host` is kept small so
that it does. `--rate-scale X` multiplies the simulated engine's decode rates (one slot's and the full
batch's) by X, everything else as the preset: three hosts at a third of the rate load this machine's cores
about as much as one at full rate (the client's and the simulator's cost follow requests/s, not slots),
which is how three 256-slot hosts fit here; E(N) compares rows of the same rate.

Figures (hosts' facts in `hosts/*.jsonl`, epoch s, and the simulators' `/sim/stats`):
- window: first shard start to last shard end; req/s over it; E(N) = req/s with N hosts / (N x req/s of
  the 1-host row of the same kind, the latest one);
- idle between shards: per host, from the last chunk of one shard to the first chunk of its next (0 when
  the next started before the last ended), summed, over hosts x window: the time a host's server got
  nothing from this run between two shards (`bench.scaleout.timing.chunk_to_chunk`);
- slot utilisation while sending (the simulator's own figure, leased slot time over 256 x first lease to
  last lease, per host): what every cost between and within shards leaves of the engine;
- the plan's sizing (shards.json), shards per host, answered twice (fingerprints answered more than once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procs import replace_section
from bench.scaleout.cluster import answered, write_requests
from bench.scaleout.timing import chunk_to_chunk, facts, shard_timing
from chunkwise.harness.cluster.local import cleanup_tree, make_base, start_cluster, stop
from chunkwise.harness.sim.presets import FAST_ENGINE

RESULTS = Path(__file__).resolve().parents[1] / "results"
ROWS, OUT = RESULTS / "shards_ahead.json", RESULTS / "shards_ahead.md"
FAST_SIM = ["--preset", "fast-engine", "--answer-tokens", "100:140"]
PARALLEL = 256


def git_head() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                       cwd=Path(__file__).resolve().parents[2])
    return r.stdout.strip() or "unknown"


def sim_flags(rate_scale: float) -> list[str]:
    """The simulators' flags: the fast-engine preset, its decode rates times `rate_scale`."""
    if rate_scale == 1:
        return FAST_SIM
    return [*FAST_SIM, "--slot-decode-tps", f"{FAST_ENGINE['decode_tps'] * rate_scale:g}",
            "--decode-batch-tps", f"{FAST_ENGINE['decode_batch_tps'] * rate_scale:g}"]


def one_run(hosts: int, per_host: int, shard_seconds: float, before: bool, rate_scale: float = 1.0,
            ) -> dict[str, Any]:
    base = make_base()
    load_before = os.getloadavg()
    cluster = start_cluster(base, [[*sim_flags(rate_scale), "--fault-seed", str(k)] for k in range(hosts)])
    try:
        for host in cluster.hosts:
            stop(host.worker)
            cluster.start_worker(host, PARALLEL, "--shards-at-once", "1" if before else "2")
        time.sleep(3)
        name = f"{'before' if before else 'ahead'}{hosts}"
        n = per_host * hosts
        src = write_requests(cluster.base / f"{name}.parquet", n, name)
        sizing = ["--shard-requests", "900"] if before else ["--shard-seconds", str(shard_seconds)]
        t = time.monotonic()
        # the run's --parallel is the hosts' slots, as a user gives it (the opening shards hold 4 rounds of them)
        done = cluster.run_parent(src, name, *sizing, "--parallel", str(PARALLEL), timeout_s=900, chunk_size=100)
        wall = time.monotonic() - t
        assert isinstance(done, subprocess.CompletedProcess)
        if done.returncode != 0:
            raise RuntimeError(f"parent exited {done.returncode}: {done.stdout[-1500:]} {done.stderr[-1500:]}")
        run_dir = cluster.shared / name
        figures = shard_timing(run_dir)
        slots = [h.stats()["slots"] for h in cluster.hosts]
        plan = json.loads((run_dir / "shards.json").read_text())
        return {
            "at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "code": git_head(), "machine": platform.node(),
            "cores": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "kind": "before" if before else "ahead",
            "hosts": hosts, "requests_in": n, "shard_seconds": None if before else shard_seconds,
            "rate_scale": rate_scale,
            "wall_s": round(wall, 1), "window_s": round(figures["window_s"], 1), "requests": figures["requests"],
            "idle_between": round(figures["idle_chunks"], 4), "tail_s": round(figures["tail_s"], 1),
            "shards_per_host": figures["shards_per_host"],
            "gaps_s": [round(g, 2) for g in chunk_to_chunk(facts(run_dir))],
            "sizing": plan.get("sizing"), "shards": len(plan["shards"]),
            "util_sending": [s.get("utilisation_sending") for s in slots],
            "twice": sum(1 for c in answered(cluster).values() if c > 1),
        }
    finally:
        cluster.close()
        cleanup_tree(base)


def scale_note(r: dict[str, Any]) -> str:
    scale = r.get("rate_scale", 1)
    return "" if scale == 1 else f" (engine x{scale:.3g})"


def rows() -> list[dict[str, Any]]:
    return json.loads(ROWS.read_text()) if ROWS.exists() else []


def sizing_cell(r: dict[str, Any]) -> str:
    parts = []
    for s in r.get("sizing") or []:
        rate = f" at {s['host_rps']} req/s" if s.get("host_rps") else ""
        count = f"{s['shards']} x " if s.get("shards") else ""
        parts.append(f"{s['source']}: {count}{s['requests']}{rate}")
    return "; ".join(parts)


HEAD = ["# Shards sized by time, dispatched ahead: fast-engine hosts (SIMULATOR figures)", ""]


def render(all_rows: list[dict[str, Any]]) -> list[str]:
    """The `## Runs` section: every row so far (other sections of the file are kept)."""
    lines = [
        "## Runs", "",
        "From `python -m bench.scaleout.ahead` (see its docstring for every definition); one row per invocation, "
        "newest last. Simulated hosts: `chunkwise sim " + " ".join(FAST_SIM) + "` (256 slots, ~48 req/s each), "
        "`chunkwise worker --parallel 256`, chunks of 100, all processes (PostgreSQL, Prefect server, parent, "
        "workers, shard processes, simulators) on this machine's 2 shared cores. The goal (issue 22 item 3): "
        "idle between shards <= 1 %, E(N) >= 0.95. `before`: one shard run per worker at a time, fixed "
        "900-request shards (the previous default); `ahead`: two per worker, the next waiting for the host's "
        "turn, shards of --shard-seconds at the measured rate.", "",
        "| at (UTC) | code | kind | hosts | requests | shard s | plan (source: shards x requests) | shards per host "
        "| window s | req/s window | E(N) | idle between shards | slot utilisation while sending (sim) | tail s "
        "| parent wall s | answered twice | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in all_rows:
        rps = r["requests"] / r["window_s"]
        # against the latest 1-host row of the same kind before it (a 1-host row is its own reference)
        one = [x for x in all_rows[:all_rows.index(r)] if x["kind"] == r["kind"] and x["hosts"] == 1
               and x.get("rate_scale", 1) == r.get("rate_scale", 1)]
        e = "-" if r["hosts"] == 1 else \
            f"{rps / (r['hosts'] * one[-1]['requests'] / one[-1]['window_s']):.2f}" if one else "n/a"
        util = ", ".join(f"{u:.1%}" if u is not None else "n/a" for u in r["util_sending"])
        lines.append(
            f"| {r['at']} | {r['code']} | {r['kind']}{scale_note(r)} | {r['hosts']} | {r['requests']} | {r['shard_seconds'] or '-'} | "
            f"{sizing_cell(r)} | {r['shards_per_host']} | {r['window_s']} | {rps:.1f} | {e} | "
            f"{r['idle_between']:.2%} | {util} | {r['tail_s']} | {r['wall_s']} | {r['twice']} | "
            f"{r['load_before'][0]} / {r['load_after'][0]} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scaleout.ahead", description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1, help="fast-engine hosts (1)")
    ap.add_argument("--per-host", type=int, default=6000, help="requests per host (6000: ~130 s of one host)")
    ap.add_argument("--shard-seconds", type=float, default=60.0, help="--shard-seconds of the run (60)")
    ap.add_argument("--before", action="store_true", help="the previous behaviour (one shard at a time, 900)")
    ap.add_argument("--rate-scale", type=float, default=1.0,
                    help="the simulated engine's decode rates times this (1; 0.333 fits three hosts here)")
    ap.add_argument("--dry", action="store_true", help="print the row, do not write the results")
    args = ap.parse_args(argv)
    row = one_run(args.hosts, args.per_host, args.shard_seconds, args.before, args.rate_scale)
    print(json.dumps(row), flush=True)
    if not args.dry:
        all_rows = [*rows(), row]
        ROWS.write_text(json.dumps(all_rows, indent=1) + "\n")
        replace_section(OUT, HEAD, "Runs", render(all_rows))
        print(f"mean slot utilisation {statistics.mean(u for u in row['util_sending'] if u is not None):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
