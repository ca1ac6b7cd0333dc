"""The batch flow: load the requests, cut them into chunks, run every chunk, aggregate.

This file only orchestrates; each step's logic lives in `chunkwise` and is testable without Prefect.
Requires an LLM server at `params.host` (or the settings' host for `params.api`) and the input
Parquet file on this host. The CLI checks the same configuration before Prefect starts
(`commands/runner.preflight`), so its mistakes are one-line errors; the flow checks again because a
deployment run has no such preflight.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, unmapped
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from chunkwise.logs import quiet_own_stops
from chunkwise.params import RunParams
from chunkwise.results.statsdoc import StatsDoc
from chunkwise.run.ending import raise_for_unfinished
from chunkwise.run.headstart import head_start_for
from chunkwise.run.session import RunSession, chunk_workers, largest
from chunkwise.run.telemetry import RunTelemetry
from chunkwise.settings import get_settings
from chunkwise.store.layout import RunPaths
from tasks.aggregate import aggregate
from tasks.chunk import chunk_task_for
from tasks.chunking import plan_chunks
from tasks.load import load_requests
from tasks.progress import Progress

FLOW_NAME = "chunkwise-batch"


@flow(
    name=FLOW_NAME,
    description="Push a Parquet file of LLM requests through Ollama in context-sized, checkpointed chunks.",
    validate_parameters=True,
)
def batch(params: RunParams) -> StatsDoc:
    quiet_own_stops()  # a run stopped by chunkwise's own error logs no traceback (a bug still does)
    head = head_start_for(params)  # `chunkwise run` began sending before this flow started (run/headstart.py)
    prepared = load_requests(params, head)
    ctx = prepared.ctx
    settings = get_settings()
    # the client, slots, estimator, stop flag (the head start's, when it opened them); releases the run lock
    with (head if head is not None else RunSession(ctx)) as session:
        specs = plan_chunks(prepared, head)
        if params.pool:  # distributed mode: shards on the pool's workers (flows/shard.py)
            from flows.shard import run_shards

            return run_shards(prepared, specs, params.pool)
        paths = RunPaths(ctx.dir)
        progress = Progress(len(specs), ctx.dir.name, run_dir=ctx.dir,
                            requests_total=sum(s.stop - s.start for s in specs), manifest=paths.manifest)
        unfinished: list[tuple[str, BaseException]] = []
        to_send = not paths.all_checkpointed(spec.index for spec in specs)  # a finished run sends nothing again
        preloaded = head.loaded() if head is not None else None  # the head start's load (or its error)
        with (RunTelemetry(session, prepared.model_info, load=to_send, preloaded=preloaded) as telemetry,
              ThreadPoolTaskRunner[Any](max_workers=chunk_workers(ctx.params, settings, largest(specs))) as runner):
            if head is not None:
                head.hand_over()  # no chunk is begun there any more; the tasks adopt the ones it began
            futures = runner.map(chunk_task_for(session, settings), {"session": unmapped(session), "spec": specs})
            labels = {future.task_run_id: spec.label for future, spec in zip(futures, specs, strict=True)}
            pending = list(futures)
            while pending:
                # a one-second wait, so progress moves with every answer, not only when a chunk ends
                done, not_done = wait(pending, timeout=1.0)
                for future in done:
                    result: Any = future.result(raise_on_failure=False)  # the summary, or the exception
                    if isinstance(result, BaseException):
                        unfinished.append((labels[future.task_run_id], result))
                        result = None
                    progress.chunk_finished(result, labels[future.task_run_id])
                    telemetry.after_chunk()
                pending = list(not_done)
                progress.tick()
        raise_for_unfinished(unfinished, paths.root)
        retries = {"retries": {"chunk_task_retries_this_session": progress.chunk_task_retries}}
        return aggregate(ctx, len(specs), {**telemetry.summary, **retries})
