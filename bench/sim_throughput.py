"""Benchmark: how fast the Ollama simulator answers, and how exactly it keeps its timing model.

Run: `.venv/bin/python -m bench.sim_throughput [--seconds S] [--timed-seconds T]`; the report is
written to bench/results/sim_throughput.md. The simulator runs as a subprocess (`chunkwise sim`,
through `running_simulator(process=True)`), so it has its own interpreter and GIL.

Part 1, capacity (goal >= 1,500 req/s): all rates 0, an aiohttp client with 8 connections sends
chat requests of a shared ~2,400-token system prompt plus a distinct ~700-token user prompt, for S
seconds, once with `stream: false` and once streamed (NDJSON, one line per token). Reported: req/s
and the simulator's CPU time per request (utime + stime of its process from /proc), hence the
requests one simulator core can serve. For scale, one synchronous httpx client sending the same
requests back to back: its req/s and its own CPU time per request.

Part 2, timing fidelity (goal: within 3 %): parallel 4, prefill 2,000 tok/s, decode 100 tok/s,
short distinct prompts and 20-40-token answers (~0.25-0.45 s each), 8 concurrent streaming clients
for T seconds. Each answered request occupies a slot for prompt_eval_duration + eval_duration (the
sim's own reported, modelled durations). The ideal makespan is those busy times list-scheduled in
send order onto 4 slots; measured makespan / ideal makespan is the overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import heapq
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import httpx

from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.textgen import WORDS
from chunkwise.harness.sim.tokenizer import chat_prompt_tokens, count_tokens

RESULTS = Path(__file__).resolve().parent / "results" / "sim_throughput.md"
MODEL = "llama3.1:8b"
CONNECTIONS = 8


def text_of(tokens: int, rng: random.Random) -> str:
    """Plausible words until the text has about `tokens` tokens."""
    words: list[str] = []
    while count_tokens(" ".join(words)) < tokens:
        words += [rng.choice(WORDS) for _ in range(max(1, (tokens - count_tokens(" ".join(words))) // 2))]
    return " ".join(words)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def flood(url: str, system: str, users: list[str], stream: bool, seconds: float, first: int) -> int:
    """Chat requests over CONNECTIONS connections for `seconds`, each with a distinct user prompt
    (numbered from `first`, so the simulator cannot reuse a tokenization); returns the answered
    requests. Bodies are assembled from pre-encoded JSON so the client spends little CPU."""
    answered = 0
    stop = time.perf_counter() + seconds
    head = (f'{{"model":{json.dumps(MODEL)},"stream":{json.dumps(stream)},"messages":[{{"role":"system","content":'
            f'{json.dumps(system)}}},{{"role":"user","content":').encode()
    encoded_users = [json.dumps(u)[:-1].encode() for u in users]  # without the closing quote
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        async def worker(k: int) -> None:
            nonlocal answered
            while time.perf_counter() < stop:
                data = head + encoded_users[k % len(users)] + f' {k}"}}]}}'.encode()
                async with session.post(f"{url}/api/chat", data=data, headers=headers) as response:
                    body = await response.read()
                    if response.status != 200 or b'"done": true' not in body[-600:]:
                        raise RuntimeError(f"bad answer {response.status}: {body[-300:]!r}")
                answered += 1
                k += CONNECTIONS

        await asyncio.gather(*(worker(first + i) for i in range(CONNECTIONS)))
    return answered


def capacity(seconds: float, rounds: int) -> dict:
    rng = random.Random(7)
    system = text_of(2400, rng)
    users = [text_of(700, rng) for _ in range(64)]
    out: dict = {"prompt_tokens": chat_prompt_tokens([{"role": "system", "content": system},
                                                      {"role": "user", "content": users[0]}]),
                 "system_tokens": count_tokens(system), "user_tokens": count_tokens(users[0])}
    with running_simulator(SimOptions(), process=True) as sim:
        pid = sim.pid
        asyncio.run(flood(sim.url, system, users, False, 1.0, 0))  # warm-up
        for run, stream in enumerate([False, True] * rounds, start=1):
            cpu0, own0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
            n = asyncio.run(flood(sim.url, system, users, stream, seconds, run * 10**7))
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
            out.setdefault("stream" if stream else "plain", []).append(
                {"requests": n, "rps": n / elapsed, "sim_cpu_us": cpu / n * 1e6,
                 "client_cpu_us": (time.process_time() - own0) / n * 1e6})
        with httpx.Client(trust_env=False, timeout=60) as client:
            n, cpu0, own0, t0 = 0, cpu_seconds(pid), time.process_time(), time.perf_counter()
            while time.perf_counter() - t0 < min(seconds, 5.0):
                body = {"model": MODEL, "stream": False, "messages": [
                    {"role": "system", "content": system}, {"role": "user", "content": f"{users[n % 64]} httpx {n}"}]}
                response = client.post(f"{sim.url}/api/chat", json=body)
                assert response.status_code == 200 and response.json()["done"]
                n += 1
            elapsed = time.perf_counter() - t0
            out["httpx"] = {"requests": n, "rps": n / elapsed, "client_cpu_us": (time.process_time() - own0) / n * 1e6,
                            "sim_cpu_us": (cpu_seconds(pid) - cpu0) / n * 1e6}
    return out


async def timed_clients(url: str, seconds: float, clients: int) -> tuple[list[int], float]:
    """Streaming clients until `seconds`; returns the busy ns (prefill + decode) of each answered
    request in send order, and the makespan in seconds."""
    rng = random.Random(3)
    sent: list[tuple[int, int]] = []  # (send index, busy ns)
    counter = 0
    start = time.perf_counter()
    stop = start + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < stop:
                index, counter = counter, counter + 1
                prompt = f"request {index}: " + " ".join(rng.choice(WORDS) for _ in range(30))
                body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
                final = None
                async with session.post(f"{url}/api/chat", json=body) as response:
                    async for line in response.content:
                        final = json.loads(line)
                if not final or not final.get("done"):
                    raise RuntimeError(f"no final line: {final}")
                sent.append((index, final.get("prompt_eval_duration", 0) + final.get("eval_duration", 0)))

        await asyncio.gather(*(worker() for _ in range(clients)))
    makespan = time.perf_counter() - start
    return [busy for _, busy in sorted(sent)], makespan


def list_schedule(busy_ns: list[int], slots: int) -> float:
    """Makespan in seconds of jobs started in order, each on the first slot to free up."""
    free = [0] * slots
    for busy in busy_ns:
        heapq.heappush(free, heapq.heappop(free) + busy)
    return max(free) / 1e9


def fidelity(seconds: float) -> dict:
    options = SimOptions(parallel=4, prefill_tps=2000, decode_tps=100, answer_tokens=(20, 40))
    with running_simulator(options, process=True) as sim:
        asyncio.run(timed_clients(sim.url, 0.5, 2))  # load the model
        busy, makespan = asyncio.run(timed_clients(sim.url, seconds, 8))
    ideal = list_schedule(busy, 4)
    return {"requests": len(busy), "mean_busy_ms": sum(busy) / len(busy) / 1e6, "makespan_s": makespan,
            "ideal_s": ideal, "measured_rps": len(busy) / makespan, "ideal_rps": len(busy) / ideal,
            "overhead_pct": (makespan / ideal - 1) * 100}


def report(cap: dict, fid: dict, argv: list[str]) -> str:
    single = cap["httpx"]
    cpu = (Path("/proc/cpuinfo").read_text().split("model name")[1].split(":")[1].splitlines()[0].strip()
           if Path("/proc/cpuinfo").exists() else platform.processor())
    rows = []
    medians = {}
    for key, label in (("plain", "`stream: false`"), ("stream", "streamed NDJSON (1 line per token)")):
        runs = cap[key]
        for run in runs:
            rows.append(f"| {label} | {run['requests']:,} | {run['rps']:,.0f} | {run['sim_cpu_us']:,.0f} us | "
                        f"{1e6 / run['sim_cpu_us']:,.0f} req/s | {run['client_cpu_us']:,.0f} us |")
        medians[key] = (statistics.median(r["rps"] for r in runs), statistics.median(r["sim_cpu_us"] for r in runs))
    table = "\n".join(rows)
    plain_cpu = medians["plain"][1]
    before, after = cap.get("load", ((0.0,) * 3, (0.0,) * 3))
    return f"""# Simulator throughput

Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}. Machine: {os.cpu_count()} cores ({cpu}), shared with
other developers' work, Python {platform.python_version()}, aiohttp {aiohttp.__version__}.
Command: `{' '.join(['.venv/bin/python -m bench.sim_throughput', *argv])}`.
Load average (1, 5, 15 min) before the capacity runs: {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}; after the
timing run: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}.

**All figures here are simulator figures** (chunkwise's Ollama simulator, not a real Ollama).

## 1. Capacity, all rates 0 (goal >= 1,500 req/s)

Chat requests: system prompt {cap['system_tokens']:,} tokens + a distinct user prompt of {cap['user_tokens']:,}
tokens = {cap['prompt_tokens']:,} rendered prompt tokens; answers 16-256 tokens. {CONNECTIONS} aiohttp
connections; client and simulator share the machine's 2 cores, so req/s is bounded by both. Runs
alternate between the two modes; each row is one run of {cap['seconds']:.0f} s.

| mode | requests | req/s | simulator CPU per request | one simulator core could serve | bench client CPU per request |
|---|---|---|---|---|---|
{table}

Medians: `stream: false` **{medians['plain'][0]:,.0f} req/s** ({medians['plain'][1]:,.0f} us of simulator CPU per
request), streamed **{medians['stream'][0]:,.0f} req/s** ({medians['stream'][1]:,.0f} us).

For scale, one synchronous `httpx.Client` sending the same kind of `stream: false` requests back to
back: {single['rps']:,.0f} req/s, spending {single['client_cpu_us']:,.0f} us of its own CPU per request. One
simulator core serves about {1e6 / plain_cpu:,.0f} req/s, i.e. {1e6 / plain_cpu / single['rps']:.1f}x what one httpx client
can send, and the simulator spends {single['client_cpu_us'] / plain_cpu:.1f}x less CPU per request than that
client: a pipeline's own clients saturate before the simulator does.

## 2. Timing fidelity (goal: within 3 %)

Parallel 4, prefill 2,000 tok/s, decode 100 tok/s, answers 20-40 tokens, 8 streaming clients for
{fid['makespan_s']:.1f} s: {fid['requests']:,} requests, mean slot time {fid['mean_busy_ms']:.0f} ms
(prompt_eval_duration + eval_duration as the simulator reported them).

| | makespan | req/s |
|---|---|---|
| ideal: reported busy times list-scheduled onto 4 slots | {fid['ideal_s']:.3f} s | {fid['ideal_rps']:.2f} |
| measured | {fid['makespan_s']:.3f} s | {fid['measured_rps']:.2f} |
| **overhead** | **{fid['overhead_pct']:+.2f} %** | |
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each capacity run, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="capacity runs per mode (alternating)")
    parser.add_argument("--timed-seconds", type=float, default=20.0, help="length of the fidelity run, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report path (Markdown)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    load_before = os.getloadavg()
    cap = capacity(args.seconds, args.rounds)
    cap["seconds"] = args.seconds
    print(json.dumps(cap, indent=1))
    fid = fidelity(args.timed_seconds)
    print(json.dumps(fid, indent=1))
    cap["load"] = (load_before, os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(cap, fid, argv))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
