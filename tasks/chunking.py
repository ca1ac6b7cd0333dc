"""Chunking: size chunks from the context budget and emit small descriptors (no prompts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.prepare import PreparedRun, plan_run

if TYPE_CHECKING:
    from chunkwise.run.headstart import HeadStart


@task(name="plan-chunks", cache_policy=NO_CACHE, persist_result=False)
def plan_chunks(prepared: PreparedRun, head: HeadStart | None = None) -> list[ChunkSpec]:
    """Chunk descriptors (index, row range) for the accepted requests; writes the run manifest. With the CLI's
    head start, its plan (it wrote the manifest, with this session, before its first request)."""
    if head is not None:
        return head.specs
    specs, _manifest = plan_run(prepared)
    return specs
