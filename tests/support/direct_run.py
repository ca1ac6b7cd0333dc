"""Running a batch without Prefect: the same steps the flow orchestrates (prepare, plan, every chunk,
aggregate), called directly, for tests of the exactly-once logic that need no engine."""

from __future__ import annotations

from typing import Any

from chunkwise.params import RunParams
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.results.finish import finish_run
from chunkwise.run.chunk import run_chunk
from chunkwise.run.context import RunContext, release_runtime
from chunkwise.run.prepare import plan_run, prepare_run


def start(params: RunParams) -> tuple[RunContext, list[ChunkSpec]]:
    prepared = prepare_run(params)
    specs, _manifest = plan_run(prepared)
    return prepared.ctx, specs


def run_all(params: RunParams) -> tuple[RunContext, list[dict[str, Any]], dict[str, Any]]:
    """Every chunk in order, then results.parquet and stats.json; returns (ctx, chunk summaries, stats)."""
    ctx, specs = start(params)
    try:
        summaries = [run_chunk(ctx, spec) for spec in specs]
        stats = finish_run(ctx, len(specs))
    finally:
        release_runtime(ctx)
    return ctx, summaries, stats
