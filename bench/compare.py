"""The same requests two ways, for the whole-command benchmarks (`pipeline_170k`, `client_cost`):
through `chunkwise run` in a child process, and through a plain async httpx client that sends
exactly the same JSON bodies with the same concurrency and does nothing else (no ledger, no
checkpoints, no Prefect). The plain client streams like chunkwise (NDJSON lines, stop at
`done: true`) or, with `stream=False`, reads one JSON answer per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.procs import RUN_ROOTS, PeakRss

MODEL, NUM_CTX, NUM_PREDICT, SEED = "llama3.1:8b", 32768, 512, 0


def request_body(system: str, prompt: str, *, stream: bool = True) -> dict[str, object]:
    """The body `chunkwise run` sends for one independent request (system prompt first)."""
    return {"model": MODEL, "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "options": {"num_ctx": NUM_CTX, "num_predict": NUM_PREDICT, "temperature": 0.0, "seed": SEED},
            "stream": stream, "keep_alive": "30m", "truncate": False}


async def plain_client(url: str, system: str, prompts: list[str], parallel: int, *, stream: bool = True) -> float:
    """Send every request, `parallel` at a time; wall seconds."""
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = request_body(system, queue.get_nowait(), stream=stream)
            if not stream:
                response = await client.post("/api/chat", json=body)
                if not response.json().get("done"):
                    raise SystemExit(f"plain client: answer without done: {response.text[:200]}")
                continue
            async with client.stream("POST", "/api/chat", json=body) as response:
                async for line in response.aiter_lines():
                    if line and json.loads(line).get("done"):
                        break

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(parallel)))
    return time.perf_counter() - started


def run_pipeline(url: str, data: Path, system_file: Path, out: Path, parallel: int, home: Path,
                 prefix: list[str] | None = None) -> tuple[float, PeakRss]:
    """`chunkwise run` over `data` as a child process (run name `bench`); wall seconds and peak RSS.
    `prefix` wraps the command (a profiler, e.g. `py-spy record -o FILE --`)."""
    env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    argv = [*(prefix or []), sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", MODEL,
            "--host", url, "--mode", "independent", "--num-ctx", str(NUM_CTX), "--num-predict", str(NUM_PREDICT),
            "--parallel", str(parallel), "--seed", str(SEED), "--system-prompt-file", str(system_file),
            "--output-dir", str(out), "--run-name", "bench", "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRss(proc.pid) as rss:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pipeline exited {proc.returncode}:\n{stdout[:1500]}\n{stderr[-3000:]}")
    return wall, rss
