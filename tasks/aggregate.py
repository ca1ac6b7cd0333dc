"""Aggregation: results.parquet, stats.json and the statistics artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from chunkwise.results.finish import finish_run
from chunkwise.results.stats import stats_table
from chunkwise.results.statsdoc import StatsDoc
from chunkwise.run.context import RunContext


@task(name="aggregate", cache_policy=NO_CACHE, persist_result=False)
def aggregate(ctx: RunContext, n_chunks: int, telemetry: dict[str, Any]) -> StatsDoc:
    """Join every chunk's outcomes with the input, in input order, and compute the statistics."""
    stats = finish_run(ctx, n_chunks, telemetry)
    create_table_artifact(
        stats_table(stats), key="chunkwise-stats", description=f"chunkwise run {ctx.dir.name}: statistics"
    )
    return stats
