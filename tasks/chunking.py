"""Chunking: size chunks from the context budget and emit small descriptors (no prompts)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.prepare import PreparedRun, plan_run


@task(name="plan-chunks", cache_policy=NO_CACHE, persist_result=False)
def plan_chunks(prepared: PreparedRun) -> list[ChunkSpec]:
    """Chunk descriptors (index, row range) for the accepted requests; writes the run manifest."""
    specs, _manifest = plan_run(prepared)
    return specs
