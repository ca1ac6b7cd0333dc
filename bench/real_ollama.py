"""Benchmark on a real Ollama: the whole `chunkwise run` against a plain async client sending the same
requests to the same Ollama with the same concurrency, one after the other.

Goal (issue 18 item 6): wall-time ratio chunkwise / plain <= 1.05 over a run of several minutes.

    .venv/bin/python -m bench.real_ollama [--requests 240] [--parallel 4] [--max-tokens 48]

One `ollama serve` (v0.24.0 from `make ollama`, Gemma 3 270M, `OLLAMA_NUM_PARALLEL=parallel`) serves both
phases. First the plain client: httpx, streamed `/api/chat` with the same body chunkwise sends (num_ctx,
num_predict, temperature 0, seed, `truncate:false`, `shift:false`), `parallel` requests in flight; then
`chunkwise run --mode independent` as a child process whose whole wall time counts (Prefect's ephemeral API,
staging, chunks, aggregation). Before the timed phases the model is loaded and one untimed `chunkwise run`
creates the benchmark's Prefect database, as any machine's first run does once. Ollama has no /metrics, so
there is no slot gauge here: the figure is the ratio of wall times. Prompts are ~60 words of filler, each
distinct (no prefix cache between requests). A 2-core CPU with a 270M model: the server, not the network,
is the bottleneck. Results: bench/results/real_ollama.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from bench.procs import publish
from bench.real_engine import SEED, SLOT_CTX, commit, prompts_for, run_pipeline
from chunkwise.harness.ollama_server.paths import MODEL_NAME, VERSION
from chunkwise.harness.ollama_server.server import running_ollama

RESULTS = Path(__file__).resolve().parent / "results" / "real_ollama.md"


def body(prompt: str, max_tokens: int) -> dict[str, Any]:
    """What chunkwise sends for one independent request (run/send.py), minus the system prompt."""
    return {"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "truncate": False, "shift": False,
            "options": {"num_ctx": SLOT_CTX, "num_predict": max_tokens, "temperature": 0.0, "seed": SEED}}


async def plain_client(url: str, prompts: list[str], parallel: int, max_tokens: int) -> tuple[float, int, int]:
    """Send every prompt once, `parallel` at a time, reading each stream to its end; (wall s, streams that
    ended, of those the ones without a `done` line). A plain client retries nothing: a stream Ollama ends
    without its final line (its repeat abort, `llm/llama_server.go`: one token repeated more than 30 times)
    counts as ended, where chunkwise retries it warmer (issue 19 item 3)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    ended = no_done = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal ended, no_done
        while not queue.empty():
            prompt = queue.get_nowait()
            done = False
            async with client.stream("POST", "/api/chat", json=body(prompt, max_tokens)) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    done = done or bool(line and json.loads(line).get("done"))
            ended += 1
            no_done += not done

    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
    return time.perf_counter() - started, ended, no_done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--no-write", action="store_true", help="print only; don't update the results file")
    args = ap.parse_args()
    load_before = os.getloadavg()
    prompts = prompts_for(args.requests)
    with tempfile.TemporaryDirectory(prefix="cw-bench-ollama-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "requests.parquet"
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(prompts))], "prompt": prompts}), data)
        warm_data = tmp_path / "warm-up.parquet"
        pq.write_table(pa.table({"id": [f"w{i}" for i in range(args.parallel)],
                                 "prompt": prompts_for(args.parallel)}), warm_data)
        with running_ollama(args.parallel, log_path=tmp_path / "ollama.log") as server:
            asyncio.run(plain_client(server.url, prompts_for(args.parallel), args.parallel, 1))  # load the model
            warm = run_pipeline(server.url, warm_data, tmp_path / "warm-up-runs", args.parallel, args.max_tokens,
                                tmp_path / "home", api="ollama", model=MODEL_NAME)[1]
            print(f"ollama ready in {server.ready_s:.1f} s, warm-up run {warm:.1f} s; plain client: "
                  f"{len(prompts)} requests", file=sys.stderr, flush=True)
            plain_s, plain_answered, plain_no_done = asyncio.run(
                plain_client(server.url, prompts, args.parallel, args.max_tokens))
            print(f"plain client: {plain_s:.1f} s; now chunkwise run", file=sys.stderr, flush=True)
            _t0, wall, _log = run_pipeline(server.url, data, tmp_path / "runs", args.parallel, args.max_tokens,
                                           tmp_path / "home", api="ollama", model=MODEL_NAME)
        run_stats = json.loads((tmp_path / "runs" / "bench" / "stats.json").read_text())
    load_after = os.getloadavg()
    req = run_stats["requests"]
    capped = req["failed_by_class"].get("output_truncated", 0)
    incomplete = req["failed_by_class"].get("incomplete", 0)
    answered = req["succeeded"] + capped + incomplete
    if answered != args.requests or plain_answered != args.requests:
        raise SystemExit(f"answered: chunkwise {answered} in {wall:.1f} s, plain {plain_answered} in {plain_s:.1f} s "
                         f"of {args.requests}: {json.dumps(req)}")
    active = run_stats["throughput"]["active_seconds"]
    ratio = wall / plain_s
    cmd = f"python -m bench.real_ollama --requests {args.requests} --parallel {args.parallel} --max-tokens {args.max_tokens}"
    lines = [
        "# Real Ollama: whole `chunkwise run` vs a plain async client on the same Ollama",
        "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}. Machine: **{os.cpu_count()}-core CPU, no GPU, "
        f"with a 270M model** (Ollama v{VERSION} built from its Go module by `make ollama`, CPU backend, Gemma 3 270M "
        f"Q4_K_M), Python {platform.python_version()}, load average {load_before[0]:.2f} / {load_before[1]:.2f} "
        f"(1 / 5 min) before, {load_after[0]:.2f} / {load_after[1]:.2f} after.",
        f"Command: `.venv/bin/{cmd}`.",
        "",
        f"{args.requests} distinct prompts of ~60 words, `num_predict` {args.max_tokens}, streamed `/api/chat`, "
        f"{args.parallel} requests in flight against `OLLAMA_NUM_PARALLEL={args.parallel}`, `num_ctx` {SLOT_CTX}; "
        f"one server for both phases, model loaded before either; one untimed `chunkwise run` of {args.parallel} "
        f"requests ({warm:.1f} s) created the benchmark's Prefect database first.",
        "",
        "| | whole command | answered |",
        "|---|---|---|",
        f"| plain async httpx client | {plain_s:.1f} s | {plain_answered} |",
        f"| `chunkwise run` (child process, independent mode) | {wall:.1f} s | {answered} |",
        "",
        f"- **Ratio, whole command: {ratio:.3f}** ({wall:.1f} s / {plain_s:.1f} s; goal <= 1.05).",
        f"- chunkwise's own active time (`stats.json` throughput.active_seconds: its sessions, each from its start to its last answer): {active:.1f} s, "
        f"{active / plain_s:.3f} of the plain client's wall time.",
        f"- Run statistics: {req['succeeded']} answers ended by the model, {capped} capped at num_predict "
        f"(`output_truncated`: this base model rarely stops), {incomplete} ended by Ollama's repeat abort after "
        f"chunkwise's warmer retries (`incomplete`), {req['failed'] - capped - incomplete} other failures. The plain "
        f"client's streams that Ollama ended without a final line (repeat abort; a plain client retries nothing): "
        f"{plain_no_done}.",
    ]
    publish(lines, RESULTS, write=not args.no_write, keep_notes=True)


if __name__ == "__main__":
    main()
