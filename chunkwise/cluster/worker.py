"""`chunkwise worker`'s supervision: a Prefect worker that polls only while its Ollama is usable.

A worker whose Ollama is down or serves another model build would pull shard after shard only to fail
them, so the supervisor checks the host every `check_s` seconds and runs `prefect worker start --pool P
--limit 1` only while the check passes (`--limit 2` with `--shards-at-once 2`, the default: the one sending
and the next, dispatched ahead, which waits for the host's turn: `chunkwise.cluster.turn`; the second one
taken only when the first is near its end: `chunkwise.cluster.lookahead`). The check passes when the server
answers `/api/version`, and, when a model is named, `/api/tags` lists it (with the given digest, when
one is given). When the check fails it stops the worker: SIGTERM starts Prefect's graceful shutdown,
which needed a second signal in practice (research/prefect.md section 4.2), so SIGINT follows after
`grace_s`, then SIGKILL. A shard flow already running is a child of the worker's process group only if
started so; Prefect's process worker starts flow runs in their own process, which keeps running and
reports its own state (a dead Ollama fails it within about a minute, see `chunkwise.cluster.shard`).

A worker started without `--model`/`--digest` learns them from its first refused shard: the shard's
preflight leaves the run's model and digest in the worker's notes file (`CHUNKWISE_WORKER_NOTES`),
and the next check then fails until the host serves that digest. Without this, a host serving
another build would pull the parent's re-dispatch of the shard it just refused (the retry queue
comes first) and refuse it again until the shard's attempts were used up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

from chunkwise.errors import LLMError
from chunkwise.lifeline import tie
from chunkwise.servers import backend_for
from chunkwise.settings import get_settings


@dataclass(frozen=True)
class WorkerConfig:
    pool: str
    name: str
    ollama_host: str
    parallel: int | None = None
    model: str | None = None
    digest: str | None = None
    queues: tuple[str, ...] = ()
    check_s: float = 5.0
    grace_s: float = 10.0
    #: File where refused shards leave the model and digest their run needs (None: learn nothing).
    notes: str | None = None
    #: The host's sending-turn lock file (`chunkwise.cluster.turn`); None: shards do not wait for a turn.
    turn: str | None = None


def leave_note(path: str, model: str, digest: str, error: str) -> None:
    """The shard's side: record what the run needs after this host refused it (atomic replace)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"model": model, "digest": digest, "error": error}, fh)
    os.replace(tmp, path)


def wanted(cfg: WorkerConfig) -> tuple[str | None, str | None]:
    """(model, digest) the host must serve: the worker's flags, else what its last refused shard needed."""
    note: dict[str, str] = {}
    if cfg.notes:
        try:
            with open(cfg.notes, encoding="utf-8") as fh:
                note = json.load(fh) or {}
        except (OSError, ValueError):
            note = {}
    model = cfg.model or note.get("model")
    digest = cfg.digest or (note.get("digest") if note.get("model") == model else None)
    return model, digest


def host_usable(host: str, model: str | None, digest: str | None, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(usable, why not) for the worker's Ollama."""
    backend = backend_for("ollama")  # distributed mode serves Ollama hosts
    try:
        with closing(backend.client(host, get_settings(), connect_timeout_s=timeout_s,
                                    read_timeout_s=timeout_s)) as client:
            served = backend.served_digest(client, model or "")  # any answer shows the server is up
    except LLMError as exc:
        return False, f"{host} does not answer ({exc})"
    if model is None:
        return True, ""
    if not served:
        return False, f"{host} does not have {model}"
    if digest and not served.startswith(digest):
        return False, f"{host} serves {model} with digest {served[:12]}, not {digest[:12]}"
    return True, ""


#: Shard runs a worker holds at once with a turn file (`chunkwise worker --shards-at-once 2`, the default): the one
#: sending and the next, started ahead so that its process start and preflight overlap the first one's
#: sending (`chunkwise.cluster.turn`). Without one (cfg.turn None) it holds one: two shards sending at
#: once would each fill the host's slots.
SHARDS_AT_ONCE = 2


def worker_command(cfg: WorkerConfig) -> list[str]:
    """Prefect's worker command line; with a turn file, run by `chunkwise.cluster.lookahead`, whose process
    worker takes the second shard only when the first one is near its end (fair to the other hosts)."""
    limit = SHARDS_AT_ONCE if cfg.turn else 1
    program = "chunkwise.cluster.lookahead" if cfg.turn else "prefect"
    cmd = [sys.executable, "-m", program, "worker", "start", "--pool", cfg.pool, "--limit", str(limit),
           "--name", cfg.name]
    for queue in cfg.queues:
        cmd += ["--work-queue", queue]
    return cmd


#: Seconds between a worker's polls for scheduled shards, unless its environment sets
#: PREFECT_WORKER_QUERY_SECONDS. Prefect's default is 10 (prefect 3.9.1 `settings/models/worker.py`), which a
#: host would wait, 5 s on average, between every two shards on top of the flow process's start
#: (bench/results/scaleout.md); at 1 s the wait is 0.5 s on average. A poll is one small API read
#: (p50 18-111 ms on PostgreSQL under the benchmark's cluster load), so N workers add N reads a second.
WORKER_QUERY_SECONDS = "1"


def worker_env(cfg: WorkerConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment, inherited by the shard flows it starts (the process worker merges its
    own environment under the job's: prefect 3.9.1 `src/prefect/workers/process.py`). This interpreter's
    directory comes first on PATH: the shard deployment starts its flow runs with the command
    `python -m prefect.engine` (deployments/cluster.yaml), which must find the Python chunkwise runs in."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", WORKER_QUERY_SECONDS)
    here = os.path.dirname(sys.executable)
    rest = [d for d in env.get("PATH", os.defpath).split(os.pathsep) if d and d != here]
    env["PATH"] = os.pathsep.join([here, *rest])
    env.update({"CHUNKWISE_OLLAMA_HOST": cfg.ollama_host, "CHUNKWISE_HOST_LABEL": cfg.name})
    if cfg.notes:
        env["CHUNKWISE_WORKER_NOTES"] = cfg.notes
    if cfg.turn:
        env["CHUNKWISE_WORKER_TURN"] = cfg.turn
    if cfg.parallel:
        env["CHUNKWISE_PARALLEL"] = str(cfg.parallel)
    return env


def stop_worker(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.wait()


def supervise_worker(cfg: WorkerConfig, *, log: Callable[[str], None] = print,
                     stop: Callable[[], bool] = lambda: False,
                     usable: Callable[[], tuple[bool, str]] | None = None,
                     spawn: Callable[[], subprocess.Popen[bytes]] | None = None) -> None:
    """Start and stop the Prefect worker as the host's check passes or fails, until `stop()`."""
    check = usable or (lambda: host_usable(cfg.ollama_host, *wanted(cfg)))
    start = spawn or (lambda: subprocess.Popen(worker_command(cfg), env=worker_env(cfg)))
    proc: subprocess.Popen[bytes] | None = None
    last_why = None
    try:
        while not stop():
            ok, why = check()
            if proc is not None and proc.poll() is not None:
                log(f"worker {cfg.name}: prefect worker exited with {proc.returncode}")
                proc = None
            if ok and proc is None:
                log(f"worker {cfg.name}: {cfg.ollama_host} is usable; polling pool {cfg.pool}")
                # a SIGKILLed `chunkwise worker` must not leave a worker polling for a host nobody checks
                proc = tie(start(), grace_s=cfg.grace_s)
            elif not ok and proc is not None:
                log(f"worker {cfg.name}: stopped polling: {why}")
                stop_worker(proc, cfg.grace_s)
                proc = None
            elif not ok and why != last_why:
                log(f"worker {cfg.name}: not polling: {why}")
            last_why = why if not ok else None
            time.sleep(cfg.check_s)
    finally:
        if proc is not None:
            stop_worker(proc, cfg.grace_s)
