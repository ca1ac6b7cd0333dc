"""The batch flow: load the requests, cut them into chunks, run every chunk, aggregate.

This file only orchestrates; each step's logic lives in `chunkwise` and is testable without Prefect.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, unmapped
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from chunkwise.params import RunParams
from chunkwise.run.context import release_runtime
from chunkwise.run.ending import raise_for_unfinished
from chunkwise.run.telemetry import RunTelemetry
from chunkwise.settings import get_settings
from chunkwise.store.layout import RunPaths, name_run_for_flow_run
from tasks.aggregate import aggregate
from tasks.chunk import run_chunk_task
from tasks.chunking import plan_chunks
from tasks.load import load_requests
from tasks.progress import Progress

FLOW_NAME = "chunkwise-batch"


@flow(
    name=FLOW_NAME,
    description="Push a Parquet file of LLM requests through Ollama in context-sized, checkpointed chunks.",
    # Bounded: Prefect's default pool is unbounded (1,532 chunks would mean 1,532 threads).
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().chunk_workers),
    validate_parameters=True,
)
def batch(params: RunParams) -> dict[str, Any]:
    prepared = load_requests(name_run_for_flow_run(params))
    specs = plan_chunks(prepared)
    if params.pool:  # distributed mode: shards on the pool's workers (flows/shard.py)
        from flows.shard import run_shards

        return run_shards(prepared, specs, params.pool)
    ctx = prepared.ctx
    settings = get_settings()
    chunk_task = run_chunk_task.with_options(
        result_storage=RunPaths(ctx.dir).prefect_results,
        retries=settings.chunk_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.chunk_retry_delay_s),
    )
    progress = Progress(len(specs), ctx.dir.name, run_dir=ctx.dir, requests_total=sum(s.stop - s.start for s in specs),
                        manifest=RunPaths(ctx.dir).manifest)
    unfinished: list[tuple[str, BaseException]] = []
    try:
        with RunTelemetry(ctx, prepared.model_info) as telemetry:
            futures = chunk_task.map(unmapped(ctx), specs)
            labels = {future.task_run_id: spec.label for future, spec in zip(futures, specs, strict=True)}
            pending = list(futures)
            while pending:
                # a one-second wait, so progress moves with every answer, not only when a chunk ends
                done, not_done = wait(pending, timeout=1.0)
                for future in done:
                    result = future.result(raise_on_failure=False)
                    if isinstance(result, BaseException):
                        unfinished.append((labels[future.task_run_id], result))
                        result = None
                    progress.chunk_finished(result, labels[future.task_run_id])
                    telemetry.after_chunk()
                pending = list(not_done)
                progress.tick()
        raise_for_unfinished(unfinished, RunPaths(ctx.dir).root)
        session = {"retries": {"chunk_task_retries_this_session": progress.chunk_task_retries}}
        return aggregate(ctx, len(specs), {**telemetry.summary, **session})
    finally:
        release_runtime(ctx)

