"""Prefect's API server SIGKILLed under a running `chunkwise run` (simulator):

* the temporary one `chunkwise run` starts for itself when PREFECT_API_URL is unset (`chunkwise.commands.
  early_api`): it does not come back; README's recovery is to run the same command again (a new temporary
  server);
* a `make server`-style server (`prefect server start`, SQLite in its own home) the run points at with
  PREFECT_API_URL: killed, then started again on the same port and database after a few seconds, as a
  supervisor (systemd, a container runtime) restarts it. The run should ride through; if it stops, the same
  command again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from bench.faults.common import (
    SIMULATOR,
    Ctx,
    Row,
    finish,
    first_record_after,
    ledger_count,
    lost,
    receipts,
    run_args,
    run_env,
    session_text,
    spawn,
    stops,
    wait_for,
    write_input,
)
from chunkwise.harness.sim.harness import free_port, running_simulator
from chunkwise.harness.sim.options import SimOptions
from tests.support.procs import children_of
from tests.support.ui_helpers import child_env, descendants, stop_process_tree

PARALLEL = 2
N = 60
SIM = SimOptions(port=0, parallel=PARALLEL, answer_tokens=(30, 60), decode_tps=100, seed=11)
DOWN_S = 5.0


def kill_tree(pid: int) -> None:
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def scenario(ctx: Ctx, name: str, env: dict[str, str], kill: Callable[[subprocess.Popen[bytes]], None],
             restart: Callable[[], None] | None) -> Row:
    """Run N requests; once 10 are recorded `kill()` the API; `restart()` it after DOWN_S (None: it stays dead);
    a run that stops is started again with the same command."""
    source, ids = write_input(ctx.tmp / f"{name}.parquet", N, name)
    out, log = ctx.tmp / "runs", ctx.tmp / f"{name}.log"
    run_dir = out / name
    with running_simulator(SIM) as sim:
        args = run_args(source, sim.url, out, name, parallel=PARALLEL)
        proc = spawn(args, env, log)
        wait_for(lambda: proc.poll() is not None or ledger_count(run_dir) >= 10, 300, f"{name}: 10 answers")
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: the run ended before the fault ({proc.returncode})")
        kill(proc)
        faulted = time.monotonic()
        if restart is not None:
            time.sleep(DOWN_S)
            restart()
        healed = time.time()
        exits = [finish(proc)]
        stop_s = time.monotonic() - faulted
        texts = [session_text(log)] if exits[0] else []
        if exits[0]:
            healed = time.time()
            exits.append(finish(spawn(args, env, log)))
        once, resent = receipts(sim.stats()["fingerprints"])
    kind, lines = stops(texts)
    what = "ended" if exits[0] else "finished"
    return Row(title[name], SIMULATOR, "independent", PARALLEL, N, once, resent, resent, lost(run_dir, ids), exits,
               first_record_after(run_dir, healed), kind, [*lines, f"the run {what} {stop_s:.0f} s after the kill"])


title = {"api-temporary": "Prefect's temporary API server (of `chunkwise run`) SIGKILLed mid-run",
         "api-server": f"`make server` Prefect server SIGKILLed mid-run, restarted after {DOWN_S:g} s"}


def temporary(ctx: Ctx) -> Row:
    env = run_env(None, ctx.tmp / "prefect-home-temporary")

    def kill(proc: subprocess.Popen[bytes]) -> None:
        servers = [pid for pid, cmd in children_of(proc.pid).items() if "create_app" in cmd]
        if not servers:
            raise RuntimeError("api-temporary: no temporary API server below the run")
        kill_tree(servers[0])

    return scenario(ctx, "api-temporary", env, kill, None)


@contextlib.contextmanager
def restartable_server(home: Path, log: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]], Callable[[], None]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        with open(log, "ab") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                           "--port", str(port), "--no-ui"], env=child_env(home), stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))
        wait_for(lambda: healthy(url), 240, "the Prefect server", 0.2)

    start()
    try:
        yield url, procs, start
    finally:
        for proc in procs:
            stop_process_tree(proc)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


def configured(ctx: Ctx) -> Row:
    home = ctx.tmp / "prefect-home-server"
    with restartable_server(home, ctx.tmp / "api-server.log") as (url, procs, start):
        env = run_env(None, home, PREFECT_API_URL=url)
        return scenario(ctx, "api-server", env, lambda proc: kill_tree(procs[-1].pid), start)


def family(ctx: Ctx) -> list[Row]:
    return [temporary(ctx), configured(ctx)]
