"""The LLM server killed mid-stream (SIGKILL, answers streaming) and started again on the same port a few
seconds later, while `chunkwise run` goes on: the simulator (`chunkwise sim` in its own process), the real
Ollama 0.24.0 of `make ollama` (serve and its runner killed together, as a crashed machine or container) and
the real llama-server of `make engine` (`--api openai`).

Receipts come from the counting proxy of tests/support/real_engine_proxy.py in front of the server (the killed
server's own counters die with it): a request counts as re-sent when the server worked on it more than once
(it answered 200, or died while the request was on the wire); attempts it refused while it started again
(llama-server's 503 while loading) cost no work and are counted apart.
README's recovery for a server that comes back: none, the run's retries ride through the outage.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from bench.faults.common import (
    SIMULATOR,
    Ctx,
    Row,
    finish,
    first_record_after,
    ledger_count,
    lost,
    run_args,
    run_env,
    session_text,
    spawn,
    stops,
    truncated,
    wait_for,
    write_input,
)
from chunkwise.harness.llama_server.paths import MODEL_ALIAS
from chunkwise.harness.llama_server.server import running_engine, start_engine
from chunkwise.harness.ollama_server.paths import MODEL_NAME, VERSION
from chunkwise.harness.ollama_server.server import running_ollama, start_ollama
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from tests.support.real_engine_proxy import CountingProxy, counting_proxy
from tests.support.ui_helpers import descendants

PARALLEL = 2
DOWN_S = 3.0


def ride_through(ctx: Ctx, name: str, against: str, kill: Callable[[], None], restart: Callable[[], None],
                 *, n: int, extra: list[str], proxy: CountingProxy) -> Row:
    """Run `n` requests through `proxy`; once 4 are recorded and an answer is streaming, `kill()`, wait DOWN_S,
    `restart()`; the run must finish by itself."""
    source, ids = write_input(ctx.tmp / f"{name}.parquet", n, name)
    out, log = ctx.tmp / "runs", ctx.tmp / f"{name}.log"
    run_dir = out / name
    proc = spawn(run_args(source, proxy.url, out, name, parallel=PARALLEL, extra=extra), run_env(ctx), log)

    def streaming() -> bool:
        sent, answered = proxy.counts()
        return proc.poll() is not None or (ledger_count(run_dir) >= 4 and sum(sent.values()) > sum(answered.values()))

    wait_for(streaming, 600, f"{name}: an answer streaming after 4 recorded")
    if proc.poll() is not None:
        raise RuntimeError(f"{name}: the run ended before the server could be killed ({proc.returncode})")
    in_flight = sum(proxy.counts()[0].values()) - sum(proxy.counts()[1].values())
    kill()
    time.sleep(DOWN_S)
    restart()
    back = time.time()
    code = finish(proc)
    sent, answered = proxy.counts()
    began = proxy.began_counts()
    cut = truncated(run_dir)
    # exit 1 with every failure an output_truncated answer: the run finished (the model's doing, not the fault's)
    kind, lines = stops([session_text(log)]) if code and cut < n else ("-", [])
    once = sum(1 for key in sent if answered[key] == 1)
    resent = sum(1 for v in began.values() if v > 1)
    refused = sum(sent.values()) - sum(began.values())
    notes = [*lines, f"{in_flight} requests were on the wire at the kill; the run went on by itself"]
    if refused:
        notes.append(f"{refused} further attempts reached the server while it started again and were refused "
                     "without work (not counted as re-sent)")
    if cut:
        notes.append(f"{cut} rows recorded output_truncated (the model ran to --num-predict; exit 1 says so): answered")
    return Row(f"LLM server SIGKILLed mid-stream, back after {DOWN_S:g} s", against, "independent", PARALLEL, n,
               once, resent, resent, lost(run_dir, ids), [code], first_record_after(run_dir, back), kind, notes)


def simulator(ctx: Ctx) -> Row:
    options = SimOptions(port=0, parallel=PARALLEL, answer_tokens=(30, 60), decode_tps=60, seed=3)
    with running_simulator(options, process=True) as sim, counting_proxy(sim.url) as proxy:
        def kill() -> None:
            os.kill(sim.pid, signal.SIGKILL)
            sim.stop()  # reaps it

        return ride_through(ctx, "llm-sim", SIMULATOR, kill, sim.start, n=40, extra=[], proxy=proxy)


def real_ollama(ctx: Ctx) -> Row:
    log = ctx.tmp / "ollama.log"
    with running_ollama(PARALLEL, log_path=log) as first, counting_proxy(first.url) as proxy:
        servers = [first]

        def kill() -> None:
            server = servers[-1]
            pids = [server.process.pid, *descendants(server.process.pid)]  # serve and its runner
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            server.stop()

        def restart() -> None:
            servers.append(start_ollama(first.config, log))
            servers[-1].wait_ready()

        try:
            return ride_through(ctx, "llm-ollama", f"real Ollama {VERSION}", kill, restart, n=16,
                                extra=["--model", MODEL_NAME, "--num-predict", "32"], proxy=proxy)
        finally:
            for server in servers[1:]:
                server.stop()


def real_llama_server(ctx: Ctx) -> Row:
    log = ctx.tmp / "llama-server.log"
    # 2 slots of 2048 tokens; flash attention as the engine tests run it
    with running_engine(PARALLEL, 2 * 2048, log_path=log, extra=("-fa", "on")) as first, \
            counting_proxy(first.url) as proxy:
        servers = [first]

        def kill() -> None:
            os.kill(servers[-1].pid, signal.SIGKILL)
            servers[-1].stop()  # reaps it

        def restart() -> None:
            servers.append(start_engine(first.config, log))
            servers[-1].wait_ready()

        try:
            return ride_through(ctx, "llm-llama", "real llama-server (make engine)", kill, restart, n=16,
                                extra=["--api", "openai", "--model", MODEL_ALIAS, "--num-predict", "32"],
                                proxy=proxy)
        finally:
            for server in servers[1:]:
                server.stop()


def family(ctx: Ctx) -> list[Row]:
    return [simulator(ctx), real_ollama(ctx), real_llama_server(ctx)]
