"""`make bench`: every benchmark in turn; each writes its results to bench/results/<name>.md.

Speed and memory goals are checked here, never by timed assertions in tests. Run on an otherwise
idle machine: the figures are wall-clock times on 2 shared cores.
"""

from __future__ import annotations

import runpy
import sys
import time

BENCHMARKS = ("bench.sim_throughput", "bench.plan_speed", "bench.latency_modes", "bench.pipeline_170k", "bench.client_cost",
              "bench.prefect_ingest", "bench.real_engine", "bench.real_ollama",
              "bench.scaleout", "bench.scaleout.ahead", "bench.startup", "bench.fast_engine", "bench.makespan_model")


def main() -> None:
    only = sys.argv[1:] or BENCHMARKS
    for name in only:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        saved, sys.argv = sys.argv, [name]
        try:
            runpy.run_module(name, run_name="__main__")
        finally:
            sys.argv = saved
        print(f"== {name} done in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
