"""Running one chunk: skip it if its checkpoint is valid, otherwise send what the ledger lacks and
write the checkpoint.

Conversation mode sends the chunk's requests in order as one chat, holding one server slot for the
whole conversation (interleaving conversations on a slot would evict each one's prefix cache).
Independent mode sends each request on its own with the system prompt first, up to `parallel` in
flight across all chunks, from the run's one sender pool, each request holding a slot while an attempt is
on the wire and, once answered, until its record is durable (not while it waits out a retry's backoff).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, wait
from pathlib import Path
from typing import Any

import orjson

from chunkwise.errors import ChunkwiseError, FatalError, RunInterrupted, StorageError
from chunkwise.inputs.stage import read_request_rows
from chunkwise.inputs.summary import HISTORY_COLUMN, OPTIONS_COLUMN
from chunkwise.logs import RunLogger, logger
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.context import RunContext
from chunkwise.run.conversation import Conversation
from chunkwise.run.send import check_running, send
from chunkwise.run.session import RunSession
from chunkwise.run.slot import SlotHold
from chunkwise.store.checkpoint import load_checkpoint, write_checkpoint
from chunkwise.store.layout import RunPaths
from chunkwise.store.ledger import Ledger
from chunkwise.store.records import ChunkSummary, FailureClass, OutcomeRecord, Status


def log() -> RunLogger:
    return logger("chunkwise.run.chunk")


def summarize(spec: ChunkSpec, records: Sequence[OutcomeRecord], digest: str, *, sent: int, from_checkpoint: bool,
              ledger_lines_dropped: int = 0) -> ChunkSummary:
    """The small result a chunk task returns (and Prefect persists): counts, never text."""
    by_class: dict[str, int] = {}
    for r in records:
        if r["status"] == Status.FAILED:
            error = str(r["error_class"])
            by_class[error] = by_class.get(error, 0) + 1
    ok = sum(1 for r in records if r["status"] == Status.OK)
    return ChunkSummary(index=spec.index, label=spec.label, requests=len(records), ok=ok, failed=len(records) - ok,
                        failed_by_class=by_class, digest=digest, sent=sent, from_checkpoint=from_checkpoint,
                        ledger_lines_dropped=ledger_lines_dropped)


def checkpoint_is_final(records: Sequence[OutcomeRecord], retry_failed: bool) -> bool:
    return not (retry_failed and any(r["status"] == Status.FAILED for r in records))


def run_chunk(session: RunSession, spec: ChunkSpec) -> ChunkSummary:
    """Run one chunk of `session`'s run to a checkpoint; returns its summary (counts, never text)."""
    ctx, rt = session.ctx, session
    paths = RunPaths(ctx.dir)
    existing = load_checkpoint(paths.checkpoint(spec.index))
    if existing is not None and checkpoint_is_final(existing[0], ctx.params.retry_failed):
        return summarize(spec, existing[0], existing[1], sent=0, from_checkpoint=True)

    check_running(rt)
    rows = read_request_rows(paths.requests, spec.start, spec.stop)
    with Ledger(paths.ledger(spec.index)) as ledger:
        try:
            done = ledger.load()
        except OSError as exc:
            raise storage_failure(rt, ledger.path, exc) from exc
        for kept in (existing[0] if existing else []):
            done.setdefault(kept["_row"], kept)  # a checkpoint outlives a lost ledger
        for recorded in done.values():
            rt.estimator.observe(recorded["prompt_chars"] or 0, recorded["prompt_eval_count"], ctx.params.num_ctx)
        pending = {
            r["_row"] for r in rows
            if r["_row"] not in done or (ctx.params.retry_failed and done[r["_row"]]["status"] == Status.FAILED)
        }
        log().info("%s: %d requests, %d already answered or recorded, %d to send",
                 spec.label, len(rows), len(rows) - len(pending), len(pending))

        def record(outcome: OutcomeRecord) -> None:
            try:
                ledger.append(outcome)
            except OSError as exc:
                raise storage_failure(rt, ledger.path, exc) from exc
            done[outcome["_row"]] = outcome

        try:
            if pending and ctx.params.mode == "conversation":
                _conversation(ctx, rt, spec, rows, pending, done, record)
            elif pending:
                _independent(ctx, rt, spec, [r for r in rows if r["_row"] in pending], record)
        except ChunkwiseError as exc:  # name the chunk in the run's final message
            exc.at(chunk=spec.label)
            raise

    records = [done[r["_row"]] for r in rows]
    try:
        digest = write_checkpoint(paths.checkpoint(spec.index), records)
    except OSError as exc:
        raise storage_failure(rt, paths.checkpoint(spec.index), exc) from exc
    return summarize(spec, records, digest, sent=len(pending), from_checkpoint=False,
                     ledger_lines_dropped=ledger.dropped)


def storage_failure(rt: RunSession, path: Path, exc: OSError) -> StorageError:
    """Stop every chunk of the run (they would meet the same full disk after paying for an answer)."""
    error = StorageError(
        f"cannot write {path} ({exc.strerror or exc}); free space or fix the run directory, then resume with "
        "the same run name: every answer already in the ledger is kept"
    )
    rt.fatal = rt.fatal or error
    return error


def _system_for(ctx: RunContext, row: dict[str, Any]) -> str:
    return row.get("system") or ctx.system_prompt


def _own_options(row: dict[str, Any]) -> dict[str, Any] | None:
    """The request's own options (an OpenAI batch line's, `chunkwise.inputs.batchfile`), or None."""
    raw = row.get(OPTIONS_COLUMN)
    return orjson.loads(raw) if raw else None


def _messages(system: str, row: dict[str, Any]) -> list[dict[str, str]]:
    """Independent mode's chat for a row: the system prompt, a chat's earlier turns, the row's prompt."""
    earlier = [{"role": t["role"], "content": t["content"]} for t in row.get(HISTORY_COLUMN) or []]
    return ([{"role": "system", "content": system}] if system else []) + earlier + [
        {"role": "user", "content": row["prompt"]}]


def _conversation(ctx: RunContext, rt: RunSession, spec: ChunkSpec, rows: list[dict[str, Any]], pending: set[int],
                  done: dict[int, OutcomeRecord], record: Callable[[OutcomeRecord], None]) -> None:
    """One chat over the chunk. A turn that overflows the context is retried once after trimming
    harder (`Conversation.prepare(harder=True)`); the record's `context_retries` says so, and a
    conversation rebuilt from the ledger replays that trim."""
    p = ctx.params
    conv = Conversation(ctx.system_prompt, num_ctx=p.num_ctx, trim_threshold=p.trim_threshold,
                        chars_per_token=ctx.chars_per_token, num_predict=p.num_predict)
    with rt.slots:
        for row in rows:
            messages = conv.prepare(row["prompt"], _system_for(ctx, row))
            if row["_row"] in pending:
                own = _own_options(row)
                outcome = send(ctx, rt, row=row["_row"], chunk=spec.index, messages=messages, own=own)
                if outcome["error_class"] == FailureClass.CONTEXT_TRUNCATED and conv.pairs:
                    messages = conv.prepare(row["prompt"], harder=True)
                    outcome = send(ctx, rt, row=row["_row"], chunk=spec.index, messages=messages, context_retries=1,
                                   own=own)
                record(outcome)
            else:
                previous = done.get(row["_row"])
                if previous is not None and previous.get("context_retries"):
                    conv.prepare(row["prompt"], harder=True)
            answered = done.get(row["_row"])
            if answered is not None and answered["status"] == Status.OK:
                conv.add(row["prompt"], answered["response"] or "", prompt_eval_count=answered["prompt_eval_count"],
                         eval_count=answered["eval_count"])


def _independent(ctx: RunContext, rt: RunSession, spec: ChunkSpec, rows: list[dict[str, Any]],
                 record: Callable[[OutcomeRecord], None]) -> None:
    def one(row: dict[str, Any]) -> None:
        messages = _messages(_system_for(ctx, row), row)
        check_running(rt)
        # the slot is taken per attempt inside send(), given back during a retry's backoff and, once answered,
        # only after the record is durable (chunkwise.run.slot: what a kill can cost stays within the slots)
        hold = SlotHold(rt.slots)
        try:
            record(send(ctx, rt, row=row["_row"], chunk=spec.index, messages=messages, slot=hold,
                        own=_own_options(row)))
        finally:
            hold.release()

    # The run's one sender pool (twice as many threads as slots, `RunSession.senders`), shared by every chunk
    # in flight: first submitted, first sent, so the oldest chunk finishes first, and the threads stay bounded
    # by the slots however many chunks run at once.
    futures = [rt.senders.submit(one, row) for row in rows]
    finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
    if any(f.exception() is not None for f in finished):
        for f in futures:
            f.cancel()
    errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
    if errors:
        raise root_cause(errors)


def root_cause(errors: list[BaseException]) -> BaseException:
    """The error that explains why a chunk stopped: a fatal answer or a failed write before anything else, and a
    `RunInterrupted` (the other requests noticing the stop) only when there is nothing else."""
    for kind in ((FatalError, StorageError), Exception):
        for exc in errors:
            if isinstance(exc, kind) and not isinstance(exc, RunInterrupted):
                return exc
    return errors[0]
