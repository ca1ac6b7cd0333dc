"""Benchmark: `chunkwise plan` on the 170,000-row sample (goal: <= 2 s wall, whole command).

Run: `.venv/bin/python -m bench.plan_speed [--rows N] [--runs K]`. Everything is written to a
temporary directory that is removed afterwards, except the report bench/results/plan_speed.md.

Measured, each in a fresh child process (wall clock from start to exit; peak RSS from the child's
own rusage via os.wait4, i.e. getrusage(RUSAGE_CHILDREN) for that child alone):
- `chunkwise sample --rows N` (generation);
- `chunkwise plan --input ... --system-prompt-file ...` K times, against a closed port so that
  model_info comes from the built-in profile without waiting on a network timeout;
- `stage_input` (validation + requests.parquet/rejects.parquet), the pipeline's first step;
and in this process: `read_requests` of 111-request chunks (the chunk read of every chunk task),
next to reading one row group of the input file, which is what a chunk read would decode without
staging's small row groups. Also the sample's characters per token under chunkwise.harness.sim.tokenizer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "plan_speed.md"


def run_child_rusage(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child process, its rusage read with os.wait4;
    raises if it fails."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.read().strip()[-500:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli() -> list[str]:
    script = Path(sys.executable).parent / "chunkwise"
    return [str(script)] if script.exists() else [sys.executable, "-m", "chunkwise"]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=170_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from chunkwise.harness.sim.tokenizer import count_tokens
    from chunkwise.inputs.sample import sample_system_prompt
    from chunkwise.inputs.stage import read_requests

    with tempfile.TemporaryDirectory(prefix="chunkwise-bench-") as tmp:
        data = Path(tmp) / "requests.parquet"
        system = Path(tmp) / "system.txt"
        system.write_text(sample_system_prompt(2400), encoding="utf-8")
        gen_wall, gen_rss, gen_out = run_child_rusage([*cli(), "sample", "--rows", str(args.rows), "--out", str(data)])
        size_mb = data.stat().st_size / 1e6

        plan_cmd = [*cli(), "plan", "--input", str(data), "--system-prompt-file", str(system),
                    "--host", f"http://127.0.0.1:{closed_port()}"]
        plans = [run_child_rusage(plan_cmd) for _ in range(args.runs)]
        plan_text = plans[-1][2]

        stage_code = ("import sys; from chunkwise.inputs.stage import stage_input; "
                      "s = stage_input(sys.argv[1], sys.argv[2], num_ctx=128000, num_predict=512); "
                      "print(s.accepted, s.rejected)")
        run_dir = Path(tmp) / "run"
        stage_wall, stage_rss, _ = run_child_rusage([sys.executable, "-c", stage_code, str(data), str(run_dir)])
        staged = run_dir / "requests.parquet"
        md = pq.read_metadata(staged)

        rng = random.Random(0)
        starts = [rng.randrange(0, md.num_rows - 111) for _ in range(50)]
        read_requests(staged, 0, 111)  # first call parses the footer once
        times = []
        for s in starts:
            t0 = time.perf_counter()
            read_requests(staged, s, s + 111)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pq.ParquetFile(data).read_row_group(0, columns=["id", "prompt"])
        input_group = time.perf_counter() - t0
        input_group_rows = pq.read_metadata(data).row_group(0).num_rows

        prompts = pq.read_table(data, columns=["prompt"]).slice(0, 20_000)["prompt"].to_pylist()
        ratio = sum(map(len, prompts)) / sum(map(count_tokens, prompts))
        mean_tokens = sum(map(count_tokens, prompts[:5000])) / len(prompts[:5000])

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    walls = [p[0] for p in plans]
    rss = [p[1] for p in plans]
    goal = "met" if max(walls) <= 2.0 else "NOT met"
    report = f"""# plan_speed: `chunkwise plan` on the {args.rows:,}-row sample

- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}
- Machine: {machine()}; load average after the runs {load} (a shared machine: other work
  running at the same time makes these numbers slower, never faster)
- Command: `.venv/bin/python -m bench.plan_speed --rows {args.rows} --runs {args.runs}`
- Timed command: `chunkwise plan --input <sample> --system-prompt-file <2,400-token prompt> --host <closed port>`
  (model_info from the built-in profile; no GPU probe wait)

| step | wall | peak RSS |
|---|---|---|
| `chunkwise sample --rows {args.rows}` ({size_mb:.1f} MB file) | {gen_wall:.2f} s | {gen_rss:.0f} MiB |
""" + "".join(
        f"| `chunkwise plan` run {i + 1} | {w:.2f} s | {r:.0f} MiB |\n" for i, (w, r) in enumerate(zip(walls, rss, strict=True))
    ) + f"""| `stage_input` (validate + write requests/rejects) | {stage_wall:.2f} s | {stage_rss:.0f} MiB |

- Plan goal (<= 2 s wall, whole command): {goal}; median {statistics.median(walls):.2f} s, worst {max(walls):.2f} s.
- `read_requests` of 111 requests (50 random chunks, staged file of {md.num_row_groups} row groups of
  <= 256 rows): median {statistics.median(times) * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms. Reading one
  {input_group_rows:,}-row group of the input instead (id + prompt): {input_group * 1000:.0f} ms.
- Sample text under chunkwise.harness.sim.tokenizer: {ratio:.3f} characters per token (first 20,000 prompts);
  mean prompt {mean_tokens:.0f} tokens (first 5,000 prompts).
- `chunkwise sample` said: {gen_out.strip()}

Plan output:

```
{plan_text.rstrip()}
```
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    return 0 if goal == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
