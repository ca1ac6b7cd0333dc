"""Benchmark: where the time from `chunkwise run` to its first chunk request goes (the head start's path).

    python -m bench.startup_timeline [--rows 600] [--repeat 3]

Runs `chunkwise run` in a child process (`--child`) whose steps are timestamped from inside: the imports,
the preflight (`commands.runner.preflight_run`: input, server probe, staging, chunk plan), the model load
(`run.preload` in the head start), the first chunk's start and its first chat request leaving the client
(httpx). Times are from the child's first line, after the interpreter's own start (~20-60 ms here). Against the
simulator in its own process, as bench/startup.py (no PREFECT_API_URL: the temporary API starts alongside).
Prints a table; bench/results/startup.md quotes it.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402 - after T0: the imports are part of what is timed
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS = ("imports", "arguments parsed and preflight", "model load", "first chunk begins", "first chunk request", "command ends")


def child(argv: list[str]) -> None:
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks.setdefault(name, time.perf_counter() - T0)

    import httpx

    import chunkwise.commands.run
    import chunkwise.commands.runner as runner
    import chunkwise.run.headstart as head
    from chunkwise.cli import main
    mark("imports")
    assert chunkwise.commands.run

    def timed(module: Any, name: str, label: str) -> None:
        real = getattr(module, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            result = real(*a, **k)
            mark(label)
            return result
        setattr(module, name, wrapper)

    timed(runner, "preflight_run", "arguments parsed and preflight")
    timed(head, "preload", "model load")
    real_chunk, real_send = head.run_chunk, httpx.Client.send

    def run_chunk(*a: Any, **k: Any) -> Any:
        mark("first chunk begins")
        return real_chunk(*a, **k)

    def send(self: httpx.Client, request: httpx.Request, **k: Any) -> httpx.Response:
        if request.url.path == "/api/chat" and b'"messages":[]' not in request.content:
            mark("first chunk request")
        return real_send(self, request, **k)

    head.run_chunk, httpx.Client.send = run_chunk, send  # type: ignore[method-assign]
    code = main(argv)
    mark("command ends")
    print("MARKS " + " ".join(f"{marks.get(s, float('nan')):.3f}" for s in STEPS), file=sys.stderr)
    sys.exit(code)


def main() -> None:
    import statistics

    from bench.procs import RUN_ROOTS
    from chunkwise.harness.sim.harness import running_simulator
    from chunkwise.harness.sim.options import SimOptions
    from chunkwise.inputs.sample import write_sample

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs: list[list[float]] = []
    with tempfile.TemporaryDirectory(prefix="cw-timeline-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "requests.parquet"
        write_sample(data, args.rows, seed=7)
        env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(tmp / "prefect-home"),
               "PREFECT_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
        env.pop("PREFECT_API_URL", None)
        options = SimOptions(port=0, parallel=4, prefill_tps=400_000, decode_tps=20_000, load_ms=0)
        with running_simulator(options, process=True) as sim:
            for i in range(args.repeat + 1):  # the first creates the Prefect home's database: not counted
                cli = ["run", "--input", str(data), "--model", "llama3.1:8b", "--host", sim.url, "--mode",
                       "independent", "--parallel", "4", "--num-ctx", "8192", "--num-predict", "256",
                       "--output-dir", str(tmp / "runs"), "--run-name", f"t{i}"]
                done = subprocess.run([sys.executable, "-m", "bench.startup_timeline", "--child", *cli], cwd=REPO,
                                      env=env, capture_output=True, text=True)
                line = [ln for ln in done.stderr.splitlines() if ln.startswith("MARKS ")]
                if done.returncode not in (0, 1) or not line:
                    raise SystemExit(f"run {i} exited {done.returncode}: {done.stderr[-3000:]}")
                if i:
                    runs.append([float(x) for x in line[0].split()[1:]])
    print(f"load average {os.getloadavg()[0]:.1f}; seconds from the child's first line (median of {args.repeat}):")
    print("| step ends | median | runs |\n|---|---|---|")
    for j, step in enumerate(STEPS):
        values = [r[j] for r in runs]
        print(f"| {step} | {statistics.median(values):.3f} s | " + ", ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
