"""Running a batch without Prefect: the same steps the flow orchestrates (prepare, plan, every chunk,
aggregate), called directly, for tests of the exactly-once logic that need no engine."""

from __future__ import annotations

from typing import Any

from chunkwise.params import RunParams
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.results.finish import finish_run
from chunkwise.run.chunk import run_chunk
from chunkwise.run.context import RunContext
from chunkwise.run.prepare import plan_run, prepare_run
from chunkwise.run.session import ClientFactory, RunSession, default_client


def start(params: RunParams) -> tuple[RunContext, list[ChunkSpec]]:
    prepared = prepare_run(params)
    specs, _manifest = plan_run(prepared)
    return prepared.ctx, specs


def run_all(params: RunParams, *, client_factory: ClientFactory = default_client,
            ) -> tuple[RunContext, list[dict[str, Any]], dict[str, Any]]:
    """Every chunk in order, then results.parquet and stats.json; returns (ctx, chunk summaries, stats)."""
    ctx, specs = start(params)
    with RunSession(ctx, client_factory=client_factory) as session:
        summaries = [run_chunk(session, spec) for spec in specs]
        stats = finish_run(ctx, len(specs))
    return ctx, summaries, stats
