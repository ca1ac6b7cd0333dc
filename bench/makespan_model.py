"""Benchmark: the makespan model (chunkwise/plan/makespan.py, issue 22 item 5) against measured runs, and its
prediction for the reference job. SIMULATOR figures for every measurement.

    python -m bench.makespan_model [--small 1000 --mid 2000 --large 4000] [--no-measure]

Fast profile, one host (measured here, `bench.fast_engine`'s setup, independent mode, 256 in flight): the
model is calibrated on runs of `--small` and `--mid` requests (the host's steady rate and the start's cost
to the sending from the two sizes, `fast_costs`; the fixed costs outside the sending window; the last lease
to the last release as the drain) and predicts a run of `--large` requests, which is then measured.

Slow profile, 1 and 3 hosts in distributed mode: the recorded runs of bench/results/scaleout.md, section
"Scaling efficiency E(N), shards of 360" (2026-11-28 01:26 UTC, 720 requests per host, shards of 360,
simulated hosts of 2 slots at ~4.3 req/s; `python -m bench.scaleout --part scaling --hosts 1,3 --per-host
720 --shard 360` re-measures them, ~7 minutes, too long for a shared machine here). Calibrated on the
1-host run (its gap between shards and its costs outside the shard window), it predicts the 3-host run.

Fast profile at a third of the rate, 1 and 3 hosts in distributed mode, shards sized by time and dispatched
ahead (the defaults): the latest rows of bench/results/shards_ahead.json with `rate_scale` 0.333 (`python -m
bench.scaleout.ahead --rate-scale 0.333 --hosts 1`, then `--hosts 3`: three 256-slot hosts at ~16 req/s
each, which this machine's 2 cores can hold where three full-rate ones are not). Calibrated on the 1-host
row (its rate over its shard window, which includes its handoffs and its drain; the parent's costs outside
that window), it predicts the 3-host row's parent wall time with `balanced=True`.

The reference job (170,000 requests of ~700 prompt + ~200 answer tokens) on 1 and 8 hosts at the
published H100 rate (vLLM FP8, MLPerf v5.1: 5,800 output tokens/s, 41-48 req/s for this shape per issue
22; 45 req/s is used, and 29 req/s for answers of a full 200 tokens), with this machine's measured
client utilisation while sending, the measured 5.2 s between shards and the old default shard of 900, and
with shards of 3 minutes of work dispatched ahead (today's defaults: no gap, hosts ending together).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from bench.fast_engine import PARALLEL, one_run
from bench.procs import replace_section
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.inputs.sample import write_sample
from chunkwise.plan.makespan import Costs, makespan

RESULTS = Path(__file__).resolve().parent / "results" / "makespan_model.md"
REPO = Path(__file__).resolve().parents[1]

#: bench/results/scaleout.md, "Scaling efficiency E(N), shards of 360" (2026-11-28 01:26 UTC), per run:
#: requests, parent wall s, shard window s, host req/s while busy (mean), gap report + pickup + spawn + enter s.
SLOW_RECORDED = {1: (720, 185.2, 172.2, 4.294, 0.0 + 1.3 + 3.1 + 0.0),
                 3: (2160, 194.6, 175.0, (4.366 + 4.379 + 4.432) / 3, 0.1 + 2.3 + 6.1 + 0.4)}
SLOW_SHARD = 360
#: Between two shards of one host with Prefect 3.9.1's process worker (scaleout.md, 900-request shards).
GAP_S = 5.2
#: The rows of `python -m bench.scaleout.ahead` (shards sized by time, dispatched ahead).
AHEAD_ROWS = Path(__file__).resolve().parent / "results" / "shards_ahead.json"
#: `--rate-scale` of the 1- and 3-host rows the model is checked against.
AHEAD_SCALE = 0.333
REFERENCE_REQUESTS = 170_000


def fast_runs(sizes: tuple[int, ...]) -> list[tuple[int, dict]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="cw-model-") as tmp_name:
        tmp = Path(tmp_name)
        for rows in sizes:
            data = tmp / f"requests-{rows}.parquet"
            write_sample(data, rows, seed=7)
            with running_simulator(SimOptions(port=0, preset="fast-engine", answer_tokens=(100, 140)),
                                   process=True) as sim:
                run_tmp = tmp / str(rows)
                run_tmp.mkdir()
                result = one_run(sim.url, data, run_tmp, "independent")
                result["sim"] = sim.stats(fingerprints=False)
            out.append((rows, result))
    return out


def fast_costs(runs: list[tuple[int, dict]]) -> tuple[Costs, float]:
    """(costs, the start's extra sending s) from two runs of different sizes. The first `PARALLEL` requests
    start together at the first lease and each later lease follows an answer, so the first to the last lease
    takes start + (requests - PARALLEL) / rate: two sizes give the steady rate and `start`, the seconds the
    run's own start costs the sending (Prefect's API and imports come up beside the head start's first
    chunks on the same cores: a short run's rate is not the steady one). The drain is the last lease to the
    last release, the fixed costs the command outside that window (means of the two runs)."""
    (r1, a), (r2, b) = runs
    s1, s2 = a["sim"]["slots"]["sending_s"], b["sim"]["slots"]["sending_s"]
    rate = (r2 - r1) / (s2 - s1)
    start = s1 - (r1 - PARALLEL) / rate
    fixed = sum(x["wall"] - x["sim"]["slots"]["window_s"] for _, x in runs) / 2
    drain = sum(x["sim"]["slots"]["window_s"] - x["sim"]["slots"]["sending_s"] for _, x in runs) / 2
    return Costs(host_rps=rate, fixed_s=fixed + start, drain_s=drain, in_flight=PARALLEL), start


def ahead_lines() -> list[str]:
    """The model against the latest 1- and 3-host rows dispatched ahead at `AHEAD_SCALE` (module docstring)."""
    recorded = json.loads(AHEAD_ROWS.read_text()) if AHEAD_ROWS.exists() else []
    latest = {}
    for r in recorded:
        if r["kind"] == "ahead" and r.get("rate_scale", 1) == AHEAD_SCALE and r["hosts"] in (1, 3):
            latest[r["hosts"]] = r
    if set(latest) != {1, 3}:
        return [f"| fast engine x{AHEAD_SCALE}, distributed, ahead | (no recorded 1- and 3-host rows in "
                f"{AHEAD_ROWS.name}) | | | | |"]
    one = latest[1]
    costs = Costs(host_rps=one["requests"] / one["window_s"], fixed_s=one["wall_s"] - one["window_s"])
    out = []
    for hosts in (1, 3):
        r = latest[hosts]
        predicted = makespan(r["requests"], hosts, costs, max(1, r["requests"] // r["shards"]), balanced=True).seconds
        out.append(f"| fast engine x{AHEAD_SCALE} (256 slots, ~16 req/s), distributed, dispatched ahead | "
                   f"{r['requests']} requests, {hosts} host(s), {r['shards']} shards sized by time ({r['at']}) | "
                   f"the 1-host row: rate {costs.host_rps:.1f} req/s, fixed {costs.fixed_s:.1f} s | {predicted:.1f} "
                   f"| {r['wall_s']:.1f} (recorded) | {predicted / r['wall_s'] - 1:+.1%} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--mid", type=int, default=2000)
    ap.add_argument("--large", type=int, default=4000)
    ap.add_argument("--no-measure", action="store_true", help="skip the fast-profile runs")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    lines = [f"## Model against measurement, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", ""]
    utilisation = None
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                         text=True).stdout.strip()
    lines += [f"Code {rev}. Machine: {os.cpu_count()} cores, Python {platform.python_version()}, shared with other "
              f"work (load average {os.getloadavg()[0]:.1f} at the start). SIMULATOR measurements.", "",
              "| profile | run | calibrated on | predicted s | measured s | error |", "|---|---|---|---|---|---|"]
    if not args.no_measure:
        first, second, third = fast_runs((args.small, args.mid, args.large))
        costs, start = fast_costs([first, second])
        large, measured = third
        predicted = makespan(large, 1, costs).seconds
        lines.append(f"| fast engine (256 slots), one process | {large} requests, 1 host | {first[0]} and {second[0]} "
                     f"requests: rate {costs.host_rps:.1f} req/s, fixed {costs.fixed_s - start:.1f} s + start "
                     f"{start:.1f} s, drain {costs.drain_s:.1f} s | {predicted:.1f} | {measured['wall']:.1f} | "
                     f"{predicted / measured['wall'] - 1:+.1%} |")
        utilisation = measured["sim"]["slots"]["utilisation_sending"]
    _, wall1, window1, rps1, gap1 = SLOW_RECORDED[1]
    slow = Costs(host_rps=rps1, fixed_s=wall1 - window1, gap_s=gap1)
    for hosts, (requests, wall, _, _, _) in SLOW_RECORDED.items():
        predicted = makespan(requests, hosts, slow, SLOW_SHARD).seconds
        lines.append(f"| slow (2 slots, ~4.3 req/s), distributed | {requests} requests, {hosts} host(s), shards of "
                     f"{SLOW_SHARD} | the recorded 1-host run: rate {rps1:.2f} req/s, gap {gap1:.1f} s, fixed "
                     f"{slow.fixed_s:.1f} s | {predicted:.1f} | {wall:.1f} (recorded) | {predicted / wall - 1:+.1%} |")
    lines += ahead_lines()
    share = utilisation if utilisation is not None else 0.977
    lines += ["", f"Reference job, {REFERENCE_REQUESTS:,} requests, predicted (a MODEL, not a measurement): client "
              f"utilisation while sending {share:.1%} (measured above against the simulator), {GAP_S} s between "
              f"shards, fixed costs {slow.fixed_s:.0f} s, drain 9 s (200 tokens at 5,800 / 256 tokens/s per slot).",
              "", "| engine rate per host | hosts | shards | predicted | sending / gaps |", "|---|---|---|---|---|"]
    for rps in (45.0, 29.0):
        costs = Costs(host_rps=rps * share, fixed_s=slow.fixed_s, drain_s=9.0, gap_s=GAP_S)
        for hosts, shard, ahead in ((1, None, False), (8, 900, False), (8, int(rps * 180), False),
                                    (8, int(rps * 180), True)):
            result = makespan(REFERENCE_REQUESTS, hosts, Costs(host_rps=costs.host_rps, fixed_s=costs.fixed_s,
                                                               drain_s=costs.drain_s, gap_s=0.0 if ahead else GAP_S),
                              shard, balanced=ahead)
            label = "one process" if shard is None else f"{shard} requests ({shard / rps:.0f} s of work)"
            label += ", sized by time and dispatched ahead (the defaults)" if ahead else ""
            lines.append(f"| {rps:.0f} req/s | {hosts} | {label} | **{result.seconds / 60:.1f} min** | "
                         f"{result.sending_s:.0f} s / {result.gaps_s:.0f} s |")
    lines.append("")
    print("\n".join(lines))
    if not args.no_write:
        head = ["# The makespan model against measured runs (SIMULATOR measurements; predictions are a MODEL)", "",
                "From `python -m bench.makespan_model` (see its docstring; the model is chunkwise/plan/makespan.py).",
                ""]
        replace_section(RESULTS, head, lines[0].removeprefix("## "), lines)


if __name__ == "__main__":
    main()
