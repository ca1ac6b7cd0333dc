"""One chunk of a shard as a Prefect task: under its chunk lock, with short retries.

Distributed mode fails fast: `DISTRIBUTED_CHUNK_RETRIES` retries (10 s, 20 s) of chunks whose
requests get `DISTRIBUTED_MAX_ATTEMPTS` attempts each, so a dead Ollama fails its shard in about a
minute and the parent moves the work. No Prefect cache: `run_chunk` itself skips a chunk with a
valid checkpoint, whichever host wrote it.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from chunkwise.cluster.shard import DISTRIBUTED_CHUNK_RETRIES, DISTRIBUTED_CHUNK_RETRY_DELAYS_S, run_locked_chunk
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.session import RunSession
from chunkwise.store.records import ChunkSummary
from tasks.chunk import retry_condition


@task(
    name="shard-chunk",
    task_run_name="{spec.label}",
    retries=DISTRIBUTED_CHUNK_RETRIES,
    retry_delay_seconds=list(DISTRIBUTED_CHUNK_RETRY_DELAYS_S),
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def shard_chunk_task(session: RunSession, spec: ChunkSpec, label: str, shard: int, attempt: int) -> ChunkSummary:
    """Send the chunk's unanswered requests from this host, or skip it when another process holds it."""
    return run_locked_chunk(session, spec, label, shard, attempt)
