"""One shard on one host: the run's context re-pointed at this host, and one chunk under its lock
with the host's share of the ledger recorded (no Prefect here; `flows/shard.py` orchestrates).

The parent writes the run's `RunContext` to `<run dir>/cluster.json` once; a shard reads it and
replaces what belongs to the host it runs on: the server URL (`CHUNKWISE_OLLAMA_HOST` in its
worker's environment) and the parallel slots (`CHUNKWISE_PARALLEL`, that host's
`OLLAMA_NUM_PARALLEL`). Everything that decides the answers (model digest, options, prompts) stays
the run's, so every host's answers carry the same content key.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from chunkwise.cluster import hosts
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.chunk import run_chunk
from chunkwise.run.context import RunContext
from chunkwise.run.session import RunSession
from chunkwise.servers import backend_for
from chunkwise.settings import get_settings
from chunkwise.store import chunklock
from chunkwise.store.files import read_json, write_json_atomic
from chunkwise.store.layout import RunPaths
from chunkwise.store.records import ChunkSummary

#: Request attempts in distributed mode (1 + 2 + 4 s of backoff): a dead host fails its chunk within
#: seconds, and the chunk-task retries (`DISTRIBUTED_CHUNK_RETRIES`) bound the shard to about a minute,
#: so the work moves instead of waiting out the single-host policy's ~45 minutes of patience.
DISTRIBUTED_MAX_ATTEMPTS = 4
DISTRIBUTED_CHUNK_RETRIES = 2
DISTRIBUTED_CHUNK_RETRY_DELAYS_S = (10.0, 20.0)


def write_context(ctx: RunContext) -> Path:
    """Record the run's context for its shards (the parent, once per session)."""
    path = RunPaths(Path(ctx.run_dir)).cluster_context
    write_json_atomic(path, {"ctx": ctx.model_dump(mode="json")})
    return path


def host_label() -> str:
    """This host's name in the statistics: CHUNKWISE_HOST_LABEL (set by `chunkwise worker` to its worker
    name), else the machine's hostname."""
    return get_settings().host_label or socket.gethostname()


def load_context(run_dir: str) -> RunContext:
    """The run's context, pointed at this host's server and slots."""
    settings = get_settings()
    recorded = RunContext(**read_json(RunPaths(Path(run_dir)).cluster_context)["ctx"])
    params = recorded.params.model_copy(update={
        "parallel": settings.parallel or recorded.params.parallel,
        "max_attempts": min(recorded.params.max_attempts, DISTRIBUTED_MAX_ATTEMPTS),
        "host": None,
    })
    host = backend_for(params.api).resolve_host(None, settings)
    return recorded.model_copy(update={"params": params, "host": host,
                                       "run_dir": str(Path(run_dir))})


def credit_dead_holders(run_dir: Path, chunks: list[int]) -> int:
    """The parent, before aggregating: credit hosts whose processes died holding a chunk that nobody
    held after them (a death between the checkpoint and the closing fact)."""
    ledger = RunPaths(Path(run_dir)).ledger
    return sum(hosts.credit_orphans(Path(run_dir), "parent", i, hosts.valid_records(ledger(i))) for i in chunks)


def chunk_done(run_dir: Path, index: int) -> bool:
    """Whether chunk `index` has a valid, final checkpoint (nothing left to send)."""
    from chunkwise.store.checkpoint import load_checkpoint

    return load_checkpoint(RunPaths(Path(run_dir)).checkpoint(index)) is not None


def run_locked_chunk(session: RunSession, spec: ChunkSpec, label: str, shard: int, attempt: int) -> ChunkSummary:
    """Run one chunk while holding its lock, recording the ledger records this host appended.

    A chunk another live process holds is skipped (`{"skipped": True}`), never waited for: the parent
    re-dispatches whatever is left without a checkpoint.
    """
    ctx = session.ctx
    if not chunklock.try_acquire(ctx.dir, spec.index):
        return ChunkSummary(index=spec.index, label=spec.label, skipped=True,
                            held_by=chunklock.owner(ctx.dir, spec.index))
    ledger = RunPaths(ctx.dir).ledger(spec.index)
    try:
        found = hosts.valid_records(ledger)
        before = len(found)
        hosts.credit_orphans(ctx.dir, label, spec.index, found)
        start_id = hosts.open_chunk(ctx.dir, label, spec.index, before, shard=shard, attempt=attempt)
        try:
            summary = run_chunk(session, spec)
            summary["skipped"] = False
            return summary
        finally:
            mine = hosts.valid_records(ledger)[before:]
            hosts.append_fact(ctx.dir, label, {"kind": "chunk", "id": start_id, "at": time.time(), "chunk": spec.index,
                                              "shard": shard, "attempt": attempt, "pid": os.getpid(),
                                              **hosts.chunk_facts(mine)})
    finally:
        chunklock.release(ctx.dir, spec.index)
