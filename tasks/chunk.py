"""One chunk as a retryable, cached Prefect task.

Retries: only transient failures (`retry_condition`, from `chunkwise.errors.is_transient`), with
exponential backoff and jitter, as many and as long as the settings say (`chunk_task_for`, the one
place they are applied); a failed chunk never re-sends what its ledger holds. Caching: the key is the run's content
key (input fingerprint, model digest, options, mode, system prompt) plus the chunk's rows and its
checkpoint digest, and the key exists only once a valid checkpoint does, so both a retried flow
run and a new flow run over the same run directory skip finished chunks, and a corrupt checkpoint
is never served from the cache.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from chunkwise.errors import is_transient
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.chunk import checkpoint_is_final
from chunkwise.run.headstart import run_or_adopt
from chunkwise.run.session import RunSession
from chunkwise.settings import Settings
from chunkwise.store.checkpoint import load_checkpoint
from chunkwise.store.layout import RunPaths
from chunkwise.store.records import ChunkSummary


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed chunk task only when it failed transiently."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state's exception, whatever it is, is what we classify
        return is_transient(exc)
    return False


def chunk_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    ctx = parameters["session"].ctx
    spec: ChunkSpec = parameters["spec"]
    loaded = load_checkpoint(RunPaths(ctx.dir).checkpoint(spec.index))
    if loaded is None or not checkpoint_is_final(loaded[0], ctx.params.retry_failed):
        return None
    return f"chunkwise-{ctx.content_key()[:24]}-{spec.start}-{spec.stop}-{loaded[1][:16]}"


@task(
    name="chunk",
    task_run_name="{spec.label}",
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_condition,
    cache_key_fn=chunk_cache_key,
    persist_result=True,
    result_serializer="json",
    cache_result_in_memory=False,
)
def run_chunk_task(session: RunSession, spec: ChunkSpec) -> ChunkSummary:
    """Send the chunk's unanswered requests and checkpoint it; returns counts, never text. A chunk the CLI's
    head start began is adopted: waited for, not sent again (`chunkwise.run.headstart`)."""
    summary = run_or_adopt(session, spec)
    summary["task_run_count"] = task_run.run_count
    return summary


def chunk_task_for(session: RunSession, settings: Settings) -> Task[..., ChunkSummary]:
    """The chunk task with the settings' retries (`chunk_retries`, backoff from `chunk_retry_delay_s`
    seconds) and its results stored in the run directory."""
    return run_chunk_task.with_options(
        result_storage=RunPaths(session.ctx.dir).prefect_results,
        retries=settings.chunk_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.chunk_retry_delay_s),
    )
