"""`chunkwise worker`: one Prefect worker for one Ollama, polling only while that Ollama is usable."""

from __future__ import annotations

import argparse
import glob
import os
import signal
import socket
import tempfile
import threading

NAME = "worker"
HELP = ("Run a Prefect worker for one Ollama host (distributed mode): it polls the pool only while the host "
        "answers and serves the model; shard flows it starts use that host and its parallel slots.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chunkwise.commands.flags import add_alias

    add = parser.add_argument
    add("--pool", required=True, metavar="NAME", help="Prefect work pool of the shard deployment (e.g. chunkwise-gpu)")
    add("--name", help="worker name, also the host's name in stats.json (default: hostname-port)")
    add("--host", dest="ollama_host", metavar="URL",
        help="this worker's Ollama, base URL (default: CHUNKWISE_OLLAMA_HOST, OLLAMA_HOST, http://127.0.0.1:11434)")
    add_alias(parser, "--ollama-host", "--host", "ollama_host")
    add("--parallel", type=int, metavar="N",
        help="that Ollama's slots (OLLAMA_NUM_PARALLEL): requests in flight (default: the run's --parallel)")
    add("--model", metavar="NAME", help="poll only while the host has this model (default: any)")
    add("--digest", help="... with this digest (prefix; default: any)")
    add("--work-queue", action="append", default=[], metavar="NAME",
        help="queue(s) to poll (default: every queue of the pool)")
    add("--check-s", type=float, default=5.0, metavar="S", help="seconds between health checks (default: 5)")
    add("--shards-at-once", type=int, choices=(1, 2), default=2, metavar="N",
        help="shard runs held at once: 2 starts the next shard while one sends, so the host never waits on "
             "Prefect between shards (the second is taken only when the first is near its end, so every host "
             "gets its share); 1 takes the next only when the last has ended (default: 2)")


def run(args: argparse.Namespace) -> int:
    from chunkwise.cluster.turn import ends_path
    from chunkwise.cluster.worker import WorkerConfig, supervise_worker
    from chunkwise.prefect_auth import check_configured_api
    from chunkwise.servers import backend_for
    from chunkwise.settings import get_settings

    host = backend_for("ollama").resolve_host(args.ollama_host, get_settings())  # distributed mode: Ollama hosts
    # a missing or wrong credential is one line here, not a Prefect worker failing to start again and again
    check_configured_api()
    name = args.name or f"{socket.gethostname()}-{host.rsplit(':', 1)[-1]}"
    # the shards this worker starts leave the run's model and digest here when they refuse the host
    fd, notes = tempfile.mkstemp(prefix="chunkwise-worker-", suffix=".json")
    os.close(fd)
    # the host's sending turn: the shard started ahead waits on it (chunkwise.cluster.turn)
    fd, turn = tempfile.mkstemp(prefix="chunkwise-worker-", suffix=".turn")
    os.close(fd)
    cfg = WorkerConfig(pool=args.pool, name=name, ollama_host=host, parallel=args.parallel, model=args.model,
                       digest=args.digest, queues=tuple(args.work_queue), check_s=args.check_s, notes=notes,
                       turn=turn if args.shards_at_once > 1 else None)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        supervise_worker(cfg, log=lambda m: print(m, flush=True), stop=stopping.is_set)
    finally:
        os.unlink(notes)
        os.unlink(turn)
        # what a killed shard left of its expected end (`chunkwise.cluster.turn.EndsWriter`)
        for left in glob.glob(glob.escape(str(ends_path(turn))) + "*"):
            os.unlink(left)
    return 0
