"""`make bench`: every benchmark in turn; each writes its results to bench/results/<name>.md.

Speed and memory goals are checked here, never by timed assertions in tests. Run on an otherwise
idle machine: the figures are wall-clock times on 2 shared cores.
"""

from __future__ import annotations

import runpy
import sys
import time

#: (module, its arguments): the issue-22 figures need a few settings of one benchmark, the model's check last
#: (it reads the rows of the third-rate runs before it).
BENCHMARKS: tuple[tuple[str, ...], ...] = (
    ("bench.sim_throughput",), ("bench.plan_speed",), ("bench.latency_modes",), ("bench.pipeline_170k",),
    ("bench.client_cost",), ("bench.prefect_ingest",), ("bench.real_engine",), ("bench.real_ollama",),
    ("bench.scaleout",), ("bench.scaleout.ahead",),
    ("bench.scaleout.ahead", "--hosts", "1", "--per-host", "4000", "--rate-scale", "0.333"),
    ("bench.scaleout.ahead", "--hosts", "3", "--per-host", "4000", "--rate-scale", "0.333"),
    ("bench.startup",), ("bench.fast_engine",),
    ("bench.fast_engine", "--rows", "6000", "--modes", "conversation", "--label",
     "conversation mode, 256 conversations, 6,000 requests, with the taper"),
    ("bench.makespan_model",))


def main() -> None:
    only = sys.argv[1:]
    for name, *args in BENCHMARKS:
        if only and name not in only:
            continue
        started = time.monotonic()
        print(f"== {name} {' '.join(args)}", flush=True)
        saved, sys.argv = sys.argv, [name, *args]
        try:
            runpy.run_module(name, run_name="__main__")
        except SystemExit as exc:  # a benchmark's main may end with sys.exit(0)
            if exc.code not in (None, 0):
                raise
        finally:
            sys.argv = saved
        print(f"== {name} done in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
