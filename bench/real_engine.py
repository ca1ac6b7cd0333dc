"""Benchmark on the real engine: the whole `chunkwise run --api openai` against a plain async client
sending the same requests to the same llama-server with the same concurrency, in one run, and the
engine's slot utilisation from its /metrics.

Goals (issue 10 item 6): wall-time ratio pipeline / plain <= 1.05; slots busy >= 95 % of the run.

    .venv/bin/python -m bench.real_engine [--requests 200] [--parallel 4] [--max-tokens 16]

One llama-server (`chunkwise.engine`, Gemma 3 270M, `-np parallel`, `-c 2048 x parallel`) serves
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

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from bench.procs import publish
from chunkwise.engine.paths import MODEL_ALIAS
from chunkwise.engine.server import running_engine
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


class SlotSampler:
    """Samples requests_processing every SAMPLE_S seconds in a thread; `busy_share` is the mean over
    the samples from the first with a busy slot to the last, divided by the slots."""

    def __init__(self, url: str, parallel: int) -> None:
        self.url, self.parallel, self.samples = url, parallel, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, trust_env=False, timeout=5) as http:
            while not self._stop.wait(SAMPLE_S):
                self.samples.append(metrics(http)["requests_processing"])

    def __enter__(self) -> SlotSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy_share(self) -> tuple[float, float]:
        """(share over the busy window, share over every sample of the phase)."""
        busy = [i for i, v in enumerate(self.samples) if v > 0]
        if not busy:
            return 0.0, 0.0
        window = self.samples[busy[0]: busy[-1] + 1]
        return sum(window) / len(window) / self.parallel, sum(self.samples) / len(self.samples) / self.parallel


def decode_counts(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    """(decode calls, busy slots per decode) between two /metrics readings."""
    n0, n1 = before["n_decode_total"], after["n_decode_total"]
    busy = after["n_busy_slots_per_decode"] * n1 - before["n_busy_slots_per_decode"] * n0
    return n1 - n0, busy / max(n1 - n0, 1)


def body(prompt: str, max_tokens: int) -> dict:
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


def run_pipeline(url: str, data: Path, out: Path, parallel: int, max_tokens: int, home: Path) -> float:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--api", "openai", "--host", url,
            "--model", MODEL_ALIAS, "--mode", "independent", "--num-ctx", str(SLOT_CTX), "--num-predict",
            str(max_tokens), "--parallel", str(parallel), "--seed", str(SEED), "--output-dir", str(out),
            "--run-name", "bench", "--json"]
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    # exit 1 with every failure an output_truncated answer is a complete run: the base model rarely
    # stops on its own, so most answers end at max_tokens (finish_reason "length")
    if done.returncode not in (0, 1):
        raise SystemExit(f"chunkwise run exited {done.returncode}:\n{done.stdout[:1500]}\n{done.stderr[-3000:]}")
    return wall


def prompts_for(count: int) -> list[str]:
    return [f"Request {i}. Summarise this text in one line:{filler(48, i)}" for i in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--no-write", action="store_true", help="print only; don't update the results file")
    args = ap.parse_args()
    prompts = prompts_for(args.requests)
    with tempfile.TemporaryDirectory(prefix="cw-bench-engine-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "requests.parquet"
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(prompts))], "prompt": prompts}), data)
        with running_engine(args.parallel, SLOT_CTX * args.parallel, log_path=tmp_path / "llama-server.log") as eng, \
                httpx.Client(base_url=eng.url, trust_env=False, timeout=10) as http:
            m0 = metrics(http)
            print(f"engine ready in {eng.ready_s:.1f} s; plain client: {len(prompts)} requests", file=sys.stderr)
            with SlotSampler(eng.url, args.parallel) as plain_slots:
                plain_s, plain_answered = asyncio.run(plain_client(eng.url, prompts, args.parallel, args.max_tokens))
            m1 = metrics(http)
            print(f"plain client: {plain_s:.1f} s; now chunkwise run", file=sys.stderr, flush=True)
            with SlotSampler(eng.url, args.parallel) as run_slots:
                wall = run_pipeline(eng.url, data, tmp_path / "runs", args.parallel, args.max_tokens,
                                    tmp_path / "home")
            m2 = metrics(http)
            rss = eng.rss_mib()
        run_stats = json.loads((tmp_path / "runs" / "bench" / "stats.json").read_text())
    plain_busy, plain_all = plain_slots.busy_share()
    run_busy, run_all = run_slots.busy_share()
    plain_dec, run_dec = decode_counts(m0, m1), decode_counts(m1, m2)
    ratio = wall / plain_s
    req = run_stats["requests"]
    capped = req["failed_by_class"].get("output_truncated", 0)
    succeeded = req["succeeded"] + capped  # answered by the engine, whole or capped at max_tokens
    if succeeded != args.requests:
        raise SystemExit(f"chunkwise run answered {succeeded} of {args.requests}: {json.dumps(req)}")
    lines = [
        "# Real engine: whole `chunkwise run --api openai` vs a plain async client on llama-server",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: **{os.cpu_count()}-core CPU, no GPU, "
        f"with a 270M model** (Gemma 3 270M Q4_K_M on llama-server built by `make engine`), Python "
        f"{platform.python_version()}, shared with other work (load average {os.getloadavg()[0]:.1f} at the end).",
        f"Command: `.venv/bin/python -m bench.real_engine --requests {args.requests} --parallel {args.parallel} "
        f"--max-tokens {args.max_tokens}`.",
        "",
        f"{args.requests} distinct prompts of ~60 words, `max_tokens` {args.max_tokens}, streamed with usage, "
        f"{args.parallel} requests in flight against `-np {args.parallel}` slots of {SLOT_CTX} tokens; one engine "
        f"for both phases (RSS {rss:.0f} MiB at the end).",
        "",
        "| | wall | requests/s | answered | slots busy (busy window) | slots busy (whole phase) "
        "| busy slots per decode |",
        "|---|---|---|---|---|---|---|",
        f"| plain async httpx client | {plain_s:.1f} s | {args.requests / plain_s:.2f} | {plain_answered} | "
        f"{plain_busy:.1%} | {plain_all:.1%} | {plain_dec[1]:.2f} of {args.parallel} |",
        f"| `chunkwise run` (whole command) | {wall:.1f} s | {args.requests / wall:.2f} | {succeeded} | "
        f"{run_busy:.1%} | {run_all:.1%} | {run_dec[1]:.2f} of {args.parallel} |",
        "",
        f"- **Ratio pipeline / plain: {ratio:.3f}** (goal <= 1.05).",
        f"- **Slots busy during chunkwise's run: {run_busy:.1%}** of its busy window, {run_all:.1%} of the whole "
        "command including Prefect's start and aggregation (goal >= 95 %).",
        f"- Run statistics: {req['succeeded']} answers ended by the model, {capped} capped at max_tokens "
        f"(`output_truncated`: this base model rarely stops), {req['failed'] - capped} other failures.",
    ]
    publish(lines, RESULTS, write=not args.no_write)


if __name__ == "__main__":
    main()
