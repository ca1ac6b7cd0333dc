"""Benchmark on the real engine: the whole `chunkwise run --api openai` against a plain async client
sending the same requests to the same llama-server with the same concurrency, in one run, and the
engine's slot utilisation from its /metrics.

Goals (issue 10 item 6): wall-time ratio pipeline / plain <= 1.05; slots busy >= 95 % of the run.

    .venv/bin/python -m bench.real_engine [--requests 180] [--parallel 4] [--max-tokens 64]

The defaults are the configuration whose figures bench/results/real_engine.md publishes (`make bench`
runs this module without arguments): about 13 minutes on the 2-core machine, long enough for the
command's fixed start-up (~10-15 s) to weigh under 5 %, with answers long enough that the slot a
request leaves for one decode step weighs under 2 % (see the results file for why 16-token answers
cannot reach 95 % for any client).

One llama-server (`chunkwise.harness.llama_server`, Gemma 3 270M, `-np parallel`, `-c 2048 x parallel`) serves
both phases: first the plain client (httpx, streamed `/v1/chat/completions` with
`stream_options.include_usage`, the same bodies and concurrency), then `chunkwise run` as a child
process whose whole wall time counts (Prefect's ephemeral API, staging, chunks, aggregation).
During each phase a sampler reads `llamacpp:requests_processing` from /metrics every 0.25 s: the
mean over the phase divided by the slots is the share of slots busy. `llamacpp:n_decode_total` and
`n_busy_slots_per_decode` give the busy slots per decode call of each phase (their deltas).
Prompts are ~60 words of filler, each distinct (no prefix cache between requests). The figures are
a 2-core CPU with a 270M model: the engine, not the network, is the bottleneck.
Results: bench/results/real_engine.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from bench.procs import RUN_ROOTS, Sampler, publish
from chunkwise.harness.llama_server.paths import MODEL_ALIAS
from chunkwise.harness.llama_server.server import running_engine
from chunkwise.measure.prompt import filler

RESULTS = Path(__file__).resolve().parent / "results" / "real_engine.md"
SLOT_CTX, SEED, SAMPLE_S = 2048, 42, 0.25


def metrics(http: httpx.Client) -> dict[str, float]:
    """llama-server's Prometheus /metrics as {name without the llamacpp: prefix: value}."""
    out = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("llamacpp:"):
            name, value = line.split(" ", 1)
            out[name.removeprefix("llamacpp:")] = float(value)
    return out


class SlotSampler(Sampler):
    """Samples requests_processing every SAMPLE_S seconds in a thread; `busy_share` is the mean over
    the samples from the first with a busy slot to the last, divided by the slots."""

    def __init__(self, url: str, parallel: int) -> None:
        super().__init__()
        self.url, self.parallel = url, parallel
        self.samples: list[float] = []
        self.times: list[float] = []

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, trust_env=False, timeout=5) as http:
            while not self._stop.wait(SAMPLE_S):
                value = metrics(http)["requests_processing"]
                self.samples.append(value)
                self.times.append(time.perf_counter())


    def busy_share(self) -> tuple[float, float]:
        """(share over the busy window, share over every sample of the phase)."""
        busy = [i for i, v in enumerate(self.samples) if v > 0]
        if not busy:
            return 0.0, 0.0
        window = self.samples[busy[0]: busy[-1] + 1]
        return sum(window) / len(window) / self.parallel, sum(self.samples) / len(self.samples) / self.parallel


def timeline(sampler: SlotSampler, started: float, ended: float) -> dict[str, float]:
    """Where a phase's slots were idle, in seconds from `started` (perf_counter) to `ended`: until the
    first busy sample (`to_first`), until all slots were first busy (`to_full`), the span with all
    slots busy from the first to the last such sample (`full_span`) and the mean share busy inside it
    (`full_share`: the gaps while requests were still queued), the tail from the last all-busy sample
    to the last busy one (`tail`), and the time after it until the phase ended (`after_last`)."""
    pairs = list(zip(sampler.times, sampler.samples, strict=True))
    busy = [t for t, v in pairs if v > 0]
    full = [t for t, v in pairs if v >= sampler.parallel]
    if not busy:
        return {"to_first": ended - started}
    first_full, last_full = (full[0], full[-1]) if full else (busy[0], busy[0])
    inside = [v for t, v in pairs if first_full <= t <= last_full]
    return {"to_first": busy[0] - started, "to_full": first_full - started, "full_span": last_full - first_full,
            "full_share": sum(inside) / max(len(inside), 1) / sampler.parallel, "tail": busy[-1] - last_full,
            "after_last": ended - busy[-1], "first_busy": busy[0], "last_busy": busy[-1]}


def decode_counts(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    """(decode calls, busy slots per decode) between two /metrics readings."""
    n0, n1 = before["n_decode_total"], after["n_decode_total"]
    busy = after["n_busy_slots_per_decode"] * n1 - before["n_busy_slots_per_decode"] * n0
    return n1 - n0, busy / max(n1 - n0, 1)


def body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0, "seed": SEED, "stream": True, "stream_options": {"include_usage": True}}


async def plain_client(url: str, prompts: list[str], parallel: int, max_tokens: int) -> tuple[float, int]:
    """Send every prompt, `parallel` at a time, reading each stream to its end; (wall s, answers)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    answered = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal answered
        while not queue.empty():
            prompt = queue.get_nowait()
            async with client.stream("POST", "/v1/chat/completions", json=body(prompt, max_tokens)) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.strip() == "data: [DONE]":
                        break
                    if line.startswith("data:") and json.loads(line[5:]).get("usage"):
                        answered += 1

    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
    return time.perf_counter() - started, answered


def run_pipeline(url: str, data: Path, out: Path, parallel: int, max_tokens: int, home: Path,
                 log_level: str = "WARNING", *, api: str = "openai",
                 model: str = MODEL_ALIAS) -> tuple[float, float, list[tuple[float, str]]]:
    """Run `chunkwise run --api API` as a child process; (start perf_counter, wall s, its stderr lines
    with their perf_counter arrival times, for the timeline)."""
    env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": log_level, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--api", api, "--host", url,
            "--model", model, "--mode", "independent", "--num-ctx", str(SLOT_CTX), "--num-predict",
            str(max_tokens), "--parallel", str(parallel), "--seed", str(SEED), "--output-dir", str(out),
            "--run-name", "bench", "--json"]
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read_stderr() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append((time.perf_counter(), line.rstrip()))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = child.stdout.read() if child.stdout else ""
    child.wait()
    wall = time.perf_counter() - started
    reader.join()
    # exit 1 with every failure an output_truncated answer is a complete run: the base model rarely
    # stops on its own, so most answers end at max_tokens (finish_reason "length")
    if child.returncode not in (0, 1):
        tail = "\n".join(line for _, line in lines[-40:])
        raise SystemExit(f"chunkwise run exited {child.returncode}:\n{stdout[:1500]}\n{tail}")
    return started, wall, lines


def prompts_for(count: int) -> list[str]:
    return [f"Request {i}. Summarise this text in one line:{filler(48, i)}" for i in range(count)]


def warm_up(url: str, tmp: Path, parallel: int, max_tokens: int, home: Path) -> float:
    """One untimed `chunkwise run` of `parallel` requests with the benchmark's Prefect home, so the
    timed run does not include creating a fresh Prefect database (once per machine, as for a user's
    first run; bench/startup.py excludes it the same way). Returns its wall seconds."""
    data = tmp / "warm-up.parquet"
    pq.write_table(pa.table({"id": [f"w{i}" for i in range(parallel)],
                             "prompt": [f"Warm-up {i}.{filler(8, 10_000 + i)}" for i in range(parallel)]}), data)
    return run_pipeline(url, data, tmp / "warm-up-runs", parallel, max_tokens, home)[1]


def commit() -> str:
    """The short commit id of the code measured, with `+` when the work tree has changes."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def row(name: str, wall: float, tl: dict[str, float], share: float, per_decode: float, parallel: int,
        answered: int) -> str:
    window = tl["last_busy"] - tl["first_busy"]
    return (f"| {name} | {wall:.1f} s | {tl['to_first']:.1f} s | {window:.1f} s | {tl['after_last']:.1f} s | "
            f"{answered} | {share:.1%} | {per_decode:.2f} of {parallel} ({per_decode / parallel:.1%}) |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=180)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="llama-server -t (default 1: on 2 shared cores, 2 engine threads fight the clients)")
    ap.add_argument("--dump", type=Path, default=None, help="write the raw timeline (samples, stderr) as JSON")
    ap.add_argument("--log-level", default="WARNING", help="the timed run's PREFECT_LOGGING_LEVEL (INFO for a "
                    "timeline of its log lines in --dump)")
    ap.add_argument("--no-write", action="store_true", help="print only; don't update the results file")
    args = ap.parse_args()
    load_before = os.getloadavg()
    prompts = prompts_for(args.requests)
    with tempfile.TemporaryDirectory(prefix="cw-bench-engine-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "requests.parquet"
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(prompts))], "prompt": prompts}), data)
        with running_engine(args.parallel, SLOT_CTX * args.parallel, log_path=tmp_path / "llama-server.log",
                            threads=args.threads) as eng, \
                httpx.Client(base_url=eng.url, trust_env=False, timeout=10) as http:
            warm = warm_up(eng.url, tmp_path, args.parallel, args.max_tokens, tmp_path / "home")
            m0 = metrics(http)
            print(f"engine ready in {eng.ready_s:.1f} s, warm-up run {warm:.1f} s; plain client: {len(prompts)} "
                  "requests", file=sys.stderr)
            with SlotSampler(eng.url, args.parallel) as plain_slots:
                plain_t0 = time.perf_counter()
                plain_s, plain_answered = asyncio.run(plain_client(eng.url, prompts, args.parallel, args.max_tokens))
            m1 = metrics(http)
            print(f"plain client: {plain_s:.1f} s; now chunkwise run", file=sys.stderr, flush=True)
            with SlotSampler(eng.url, args.parallel) as run_slots:
                run_t0, wall, run_log = run_pipeline(eng.url, data, tmp_path / "runs", args.parallel,
                                                     args.max_tokens, tmp_path / "home", args.log_level)
            m2 = metrics(http)
            rss = eng.rss_mib()
        run_stats = json.loads((tmp_path / "runs" / "bench" / "stats.json").read_text())
    load_after = os.getloadavg()
    plain_tl = timeline(plain_slots, plain_t0, plain_t0 + plain_s)
    run_tl = timeline(run_slots, run_t0, run_t0 + wall)
    print(json.dumps({"plain": plain_tl, "run": run_tl}, indent=1), file=sys.stderr)
    if args.dump:
        args.dump.write_text(json.dumps({
            "plain": {"t0": plain_t0, "wall": plain_s, "times": plain_slots.times, "samples": plain_slots.samples},
            "run": {"t0": run_t0, "wall": wall, "times": run_slots.times, "samples": run_slots.samples,
                    "stderr": run_log}}))
    plain_busy, plain_all = plain_slots.busy_share()
    run_busy, run_all = run_slots.busy_share()
    plain_dec, run_dec = decode_counts(m0, m1), decode_counts(m1, m2)
    ratio = wall / plain_s
    plain_window = plain_tl["last_busy"] - plain_tl["first_busy"]
    run_window = run_tl["last_busy"] - run_tl["first_busy"]
    # the engine's counter covers decode calls only; over the whole command, weight it by the share of
    # the command the engine was busy at all (outside that window no slot works)
    run_whole = run_dec[1] / args.parallel * run_window / wall
    plain_whole = plain_dec[1] / args.parallel * plain_window / plain_s
    req = run_stats["requests"]
    capped = req["failed_by_class"].get("output_truncated", 0)
    succeeded = req["succeeded"] + capped  # answered by the engine, whole or capped at max_tokens
    if succeeded != args.requests:
        raise SystemExit(f"chunkwise run answered {succeeded} of {args.requests}: {json.dumps(req)}")
    cmd = (f"python -m bench.real_engine --requests {args.requests} --parallel {args.parallel} "
           f"--max-tokens {args.max_tokens} --threads {args.threads}")
    lines = [
        "# Real engine: whole `chunkwise run --api openai` vs a plain async client on llama-server",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}. Machine: **{os.cpu_count()}-core CPU, no GPU, "
        f"with a 270M model** (Gemma 3 270M Q4_K_M on llama-server built by `make engine`, `-t {args.threads}`), "
        f"Python {platform.python_version()}, shared with other work: load average "
        f"{load_before[0]:.2f} / {load_before[1]:.2f} (1 / 5 min) before, {load_after[0]:.2f} / "
        f"{load_after[1]:.2f} after.",
        f"Command: `flock /work/wt/heavy.lock .venv/bin/{cmd}`.",
        "",
        f"{args.requests} distinct prompts of ~60 words, `max_tokens` {args.max_tokens}, streamed with usage, "
        f"{args.parallel} requests in flight against `-np {args.parallel}` slots of {SLOT_CTX} tokens; one engine "
        f"for both phases (RSS {rss:.0f} MiB at the end). Before the timed phases one untimed `chunkwise run` "
        f"of {args.parallel} requests ({warm:.1f} s) created the benchmark's Prefect database, as any machine's "
        "first run does once.",
        "",
        "**The run** is the engine's busy window: from the first request the engine receives to its last "
        "answer (first and last /metrics sample with a request processing). Slots busy are measured two ways "
        "over it: the sampled gauge `requests_processing` (every 0.25 s; llama-server answers /metrics "
        "between two decode batches) and the engine's exact counter `n_busy_slots_per_decode` (the delta "
        "over the phase; decode calls happen only while a slot is busy).",
        "",
        "| | whole command | command to first request | the run (first request to last answer) "
        "| last answer to exit | answered | slots busy, sampled | busy slots per decode |",
        "|---|---|---|---|---|---|---|---|",
        row("plain async httpx client", plain_s, plain_tl, plain_busy, plain_dec[1], args.parallel, plain_answered),
        row("`chunkwise run` (child process)", wall, run_tl, run_busy, run_dec[1], args.parallel, succeeded),
        "",
        f"- **Ratio, whole command: {ratio:.3f}** ({wall:.1f} s / {plain_s:.1f} s; goal <= 1.05). "
        f"**Ratio, the run: {run_window / plain_window:.3f}** ({run_window:.1f} s / {plain_window:.1f} s).",
        f"- **Slots busy during chunkwise's run: {run_dec[1] / args.parallel:.1%}** by the engine's counter, "
        f"{run_busy:.1%} sampled (goal >= 95 %); the plain client: {plain_dec[1] / args.parallel:.1%} and "
        f"{plain_busy:.1%}.",
        f"- **Slots busy over the whole command** (its idle start-up and ending counted): chunkwise "
        f"{run_whole:.1%} by the counter times the busy window's share of the command ({run_window:.1f} s of "
        f"{wall:.1f} s), {run_all:.1%} sampled; plain client {plain_whole:.1%} and {plain_all:.1%}.",
        f"- Timeline of chunkwise's run: all {args.parallel} slots first busy {run_tl['to_full']:.1f} s after the "
        f"command started; between then and the last moment all were busy ({run_tl['full_span']:.1f} s), "
        f"{run_tl['full_share']:.1%} of the slots were busy on average (plain client: {plain_tl['full_share']:.1%}); "
        f"the tail with fewer requests left than slots took {run_tl['tail']:.1f} s (plain {plain_tl['tail']:.1f} s).",
        f"- Run statistics: {req['succeeded']} answers ended by the model, {capped} capped at max_tokens "
        f"(`output_truncated`: this base model rarely stops), {req['failed'] - capped} other failures.",
    ]
    publish(lines, RESULTS, write=not args.no_write, keep_notes=True)


if __name__ == "__main__":
    main()
