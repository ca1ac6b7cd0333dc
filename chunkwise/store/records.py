"""What one request's outcome looks like, in the ledger, the chunk checkpoints and results.parquet
(`OutcomeRecord`), and what a chunk task reports (`ChunkSummary`).

Statuses: `ok` (answered), `failed` (recorded with a failure class and message; the response text
is kept when there was one, since the run paid for it), `rejected` (quarantined before sending).

Failure classes and their policies:
- `transient`: connection error, timeout, 5xx, a broken-off answer -- retried with exponential backoff
  and jitter up to `max_attempts` (a timeout twice: `chunkwise.run.send`); the message is the server's.
  A 503 (the server's queue is full) is back-pressure, never an attempt: it is waited out for up to
  `busy_timeout_s` per request;
- `incomplete`: the server ended the answer without `done: true` (Ollama's repeated-token abort, the same
  every time at temperature 0) -- retried warmer, like `invalid_output`, up to `invalid_output_attempts`;
- `context_truncated`: Ollama evaluated a cut prompt (per `prompt_eval_count`), answered 400
  "input length exceeds the context length", or the context filled during the answer (done_reason
  `length` before num_predict, with `shift: false`) -- not retried as is; in conversation mode the
  turn is retried once after trimming harder;
- `output_truncated`: `done_reason: length` -- recorded; retried once with twice the num_predict
  when `retry_output_truncated` is set;
- `invalid_output`: the answer fails the requested JSON schema -- retried up to
  `invalid_output_attempts` times, each retry at a higher temperature (see `run.send`);
- `fatal`: model not found, bad request -- stops the run at once with the server's message.
"""

# No `from __future__ import annotations`: `Required` must be seen when the class is made (__required_keys__).
from enum import StrEnum
from typing import Any, Required, TypedDict, cast

import pyarrow as pa


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    REJECTED = "rejected"


class FailureClass(StrEnum):
    TRANSIENT = "transient"
    CONTEXT_TRUNCATED = "context_truncated"
    OUTPUT_TRUNCATED = "output_truncated"
    INVALID_OUTPUT = "invalid_output"
    INCOMPLETE = "incomplete"
    FATAL = "fatal"


#: Columns of a request outcome, in order. Durations are integer nanoseconds; `latency_ns` is the
#: client-side wall time of the final attempt.
OUTCOME_SCHEMA = pa.schema(
    [
        ("_row", pa.int64()),
        ("status", pa.string()),
        ("response", pa.string()),
        #: A thinking model's reasoning trace (`message.thinking`); its tokens are inside eval_count.
        ("thinking", pa.string()),
        ("done_reason", pa.string()),
        ("prompt_eval_count", pa.int64()),
        ("eval_count", pa.int64()),
        ("total_duration_ns", pa.int64()),
        ("load_duration_ns", pa.int64()),
        ("prompt_eval_duration_ns", pa.int64()),
        ("eval_duration_ns", pa.int64()),
        ("latency_ns", pa.int64()),
        ("prompt_chars", pa.int64()),
        ("expected_prompt_tokens", pa.int64()),
        ("chunk", pa.int32()),
        ("attempts", pa.int32()),
        ("error_class", pa.string()),
        ("error_message", pa.string()),
        #: Sampling temperature of the recorded attempt (an invalid answer is retried warmer).
        ("temperature", pa.float64()),
        #: Conversation mode: retries of this turn after trimming harder (0 or 1).
        ("context_retries", pa.int32()),
    ]
)

OUTCOME_FIELDS = tuple(OUTCOME_SCHEMA.names)


class OutcomeRecord(TypedDict):
    """One request's outcome as the ledger, a checkpoint and results.parquet hold it (`OUTCOME_SCHEMA`,
    column for column; None where the request has no such figure). Durations in nanoseconds."""

    _row: int
    status: str
    response: str | None
    thinking: str | None
    done_reason: str | None
    prompt_eval_count: int | None
    eval_count: int | None
    total_duration_ns: int | None
    load_duration_ns: int | None
    prompt_eval_duration_ns: int | None
    eval_duration_ns: int | None
    latency_ns: int | None
    prompt_chars: int | None
    expected_prompt_tokens: int | None
    chunk: int | None
    attempts: int | None
    error_class: str | None
    error_message: str | None
    temperature: float | None
    context_retries: int | None


def outcome(**values: object) -> OutcomeRecord:
    """A complete outcome record: every column present, missing ones None."""
    unknown = set(values) - set(OUTCOME_FIELDS)
    if unknown:
        raise KeyError(f"unknown outcome fields: {sorted(unknown)}")
    return cast(OutcomeRecord, {name: values.get(name) for name in OUTCOME_FIELDS})


def as_outcomes(records: list[dict[str, Any]]) -> list[OutcomeRecord]:
    """Records read back from a ledger or a checkpoint: what `outcome` wrote (both verify their bytes)."""
    return cast(list[OutcomeRecord], records)


class ChunkSummary(TypedDict, total=False):
    """What a chunk task returns (and Prefect persists as JSON): counts, never text."""

    index: Required[int]
    label: Required[str]
    requests: int
    ok: int
    failed: int
    #: Failed requests per failure class (`FailureClass` values).
    failed_by_class: dict[str, int]
    #: The checkpoint's digest.
    digest: str
    #: Requests sent by this run of the chunk (0 when its checkpoint was reused).
    sent: int
    from_checkpoint: bool
    #: Torn or corrupt ledger lines dropped when the ledger was read.
    ledger_lines_dropped: int
    #: Prefect's run count of the chunk task (1 + its retries this session).
    task_run_count: int
    #: Sent by `chunkwise run`'s head start before the flow started, and adopted by the chunk's task
    #: (`chunkwise.run.headstart`).
    head_start: bool
    #: Distributed mode: the chunk was held by another live process and skipped, and by whom.
    skipped: bool
    held_by: str
