"""The one error tree of chunkwise, and the exit codes every `chunkwise` command shares.

Our exception hierarchy (exit code in brackets; the layout follows httpx's `_exceptions.py`):

* ChunkwiseError [1] ...................... root; `.chunk` (label) and `.row` (input row) where known
  + SetupError [2] ........................ the run cannot start: fix the configuration, then run again
  | - InputError .......................... the input file as a whole is unusable (bad rows are quarantined instead)
  | - UnsafePathError ..................... a run name or path would leave the output directory
  | - RunLocked ........................... another live process is working on this run
  | + ServerMismatch ...................... the server cannot serve the run as asked (model, num_ctx, an option)
  |   - ThinkError ........................ --think asked of a model or server that cannot honour it
  + StorageError [2] ...................... the run directory cannot be written (disk full, quota, read-only)
  + RunInterrupted [130] .................. Ctrl-C, SIGTERM, or a fatal error in another chunk; resumable
  + ChunksUnfinished [1] .................. transient trouble outlasted the chunk retries; resumable
  + IncompleteRun [1] ..................... some chunks have no valid checkpoint; resume before aggregating
  + ChunkBusy [1] ......................... distributed: another live process holds the chunk's lock; skipped
  + ShardsUnfinished [1] .................. distributed: shards used up their attempts; run again, same name
  + SetupError > HostUnusable [2] ......... distributed: a host's server differs from the run (digest, ...)
  + LLMError [1] .......................... the LLM-server boundary (Ollama or OpenAI-compatible);
    |                                       `.status` is the HTTP status when there was one
    - ConfigError [2] ..................... bad host URL (not http/https); never retried; also a SetupError
    + TransientError [1] .................. retry with backoff: the server may answer next time
    | - ServerUnavailable ................. connection refused / DNS / connect timeout: the server is down
    | - RequestTimeout .................... no byte for `read_timeout_s` (a stall)
    | + ServerError ....................... HTTP 5xx or 429, or an error line inside a 200 stream
    | | - ServerBusy ...................... HTTP 503 "server busy ... maximum pending requests exceeded"
    | + IncompleteResponse ................ the answer ended without its final metrics or broke off mid-body
    |   - AnswerUnfinished ................ the stream ended cleanly without `done` (Ollama's repeated-token abort)
    - ContextExceeded [1] ................. HTTP 400 "the input length exceeds the context length"; a failed record
    + FatalError [2] ...................... stop the run: retrying cannot help
      - ModelNotFound ..................... HTTP 404; the hint says how to get the model
      - BadRequest ........................ other HTTP 400s (bad option, bad schema, ...)
      - ServerKeepsFailing ................ the circuit breaker: the same server error on several different rows

Exit codes:

    0    success: every request answered
    1    finished, but some requests failed or were rejected before sending (see results.parquet
         and rejects.parquet); or chunks left unfinished by a transient outage -- resumable with
         the same run name, `chunkwise resume`, or Prefect's Retry (`--retry-failed` re-sends the
         failed ones; a rejected row needs its input fixed)
    2    bad input, bad configuration, unreachable server at start, a fatal server answer (model not
         found), or a run directory that cannot be written (disk full): fix it, then resume
    130  stopped by Ctrl-C or SIGTERM; resumable

Every class keeps its constructor arguments in `args` (Prefect pickles a failed task's exception and
unpickles it in the flow; `chunk` and `row` travel in the instance's `__dict__`). Every message says
what to do. `SetupError` is also a `ValueError`, as configuration errors were before this tree.
"""

from __future__ import annotations

import errno
from typing import ClassVar

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Write failures a retry cannot cure: disk full, quota exceeded, read-only file system.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class ChunkwiseError(Exception):
    """Root of every error chunkwise raises on purpose; `exit_code` is what the CLI exits with."""

    exit_code: ClassVar[int] = EXIT_FAILED

    def __init__(self, message: str, *args: object) -> None:
        super().__init__(message, *args)
        self.message = message
        #: The chunk's label (e.g. `chunk-0042 [4662-4772]`) when the error belongs to one chunk.
        self.chunk: str | None = None
        #: The input row number (counting from 0) when the error belongs to one request.
        self.row: int | None = None

    def at(self, *, chunk: str | None = None, row: int | None = None) -> ChunkwiseError:
        """Record where the error happened (keeps what is already known); returns self for `raise`."""
        if self.chunk is None and chunk is not None:
            self.chunk = chunk
        if self.row is None and row is not None:
            self.row = row
        return self

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.chunk, None if self.row is None else f"input row {self.row}") if part)
        return f"{where}: {self.message}" if where else self.message


# -- the run's own errors ------------------------------------------------------------------------


class SetupError(ChunkwiseError, ValueError):
    """The run cannot start; the message says why and what to do. Nothing was sent."""

    exit_code: ClassVar[int] = EXIT_CONFIG


class InputError(SetupError):
    """The input file cannot be used as a whole; str() is one line saying what to do."""


class ServerMismatch(SetupError):
    """The server cannot serve this run as configured (a model it does not serve, a num_ctx above its
    context, an option this server kind cannot honour); the message says what to change."""


class ThinkError(ServerMismatch):
    """`--think` asked of a model or a server that cannot honour it; the message says what to do."""


class UnsafePathError(SetupError):
    """A path would leave the directory it must stay in."""


class RunLocked(SetupError):
    """Another live process is working on this run."""


class StorageError(ChunkwiseError):
    """The run directory could not be written (disk full, quota, read-only). A run that meets it
    stops sending at once: an answer that cannot be recorded would be paid for again on resume."""

    exit_code: ClassVar[int] = EXIT_CONFIG


class RunInterrupted(ChunkwiseError):
    """The run was asked to stop (Ctrl-C, SIGTERM, or a fatal error in another chunk)."""

    exit_code: ClassVar[int] = EXIT_INTERRUPTED


class ChunksUnfinished(ChunkwiseError):
    """Some chunks could not finish (transient trouble outlasted their retries); resume the run."""


class IncompleteRun(ChunkwiseError):
    """Some chunks have no valid checkpoint; the run must be resumed before it can be aggregated."""


# -- distributed mode (chunkwise.cluster) ---------------------------------------------------------


class HostUnusable(SetupError):
    """A host's server cannot serve the run (another model digest, num_ctx too large, CPU spill, down);
    its shard fails at once, without retries, and the work moves to the other hosts."""


class ChunkBusy(ChunkwiseError):
    """Another live process (maybe on another host) is sending this chunk; skip it."""

    def __init__(self, index: int, owner: str) -> None:
        super().__init__(f"chunk {index} is being sent by another chunkwise process ({owner}); skipped here")
        self.index = index
        self.owner = owner

    def __reduce__(self) -> tuple[type[ChunkBusy], tuple[int, str]]:
        # picklable with its own arguments (Prefect pickles exceptions)
        return (ChunkBusy, (self.index, self.owner))


class ShardsUnfinished(ChunkwiseError):
    """Some shards used up their attempts with chunks still unsent; run again with the same run name."""


# -- the LLM-server boundary (chunkwise.ollama, chunkwise.openai) ----------------------------------


class LLMError(ChunkwiseError):
    """An LLM server did not give a complete answer. Backend-neutral: every client raises these."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, status)
        #: The HTTP status, when the server answered with one.
        self.status = status


class ConfigError(LLMError, SetupError):
    """The server's address is unusable (not an http(s) URL); never retried."""

    exit_code: ClassVar[int] = EXIT_CONFIG


class TransientError(LLMError):
    """Retry with backoff: the server may answer next time."""


class ServerUnavailable(TransientError):
    """Connection refused, DNS failure or connect timeout: the server is down or elsewhere."""


class RequestTimeout(TransientError):
    """No byte arrived for the read timeout (a stall)."""


class ServerError(TransientError):
    """HTTP 5xx or 429, or an error line inside a 200 stream."""


class ServerBusy(ServerError):
    """HTTP 503: the server's queue of pending requests is full."""


class IncompleteResponse(TransientError):
    """The answer broke off mid-body or ended without its final metrics."""


class AnswerUnfinished(IncompleteResponse):
    """The server ended the answer cleanly but without `done: true`: Ollama's repeated-token abort (more than
    30 identical tokens in a row end the completion with no final line, `v0.24.0:llm/server.go:1697-1706`),
    which at temperature 0 happens every time for the same request. Retried warmer, then recorded
    `incomplete` (`chunkwise.run.send`)."""


class ContextExceeded(LLMError):
    """HTTP 400: the prompt is longer than the context; recorded as a failed request, not retried."""


class FatalError(LLMError):
    """Stop the run: retrying cannot help (the message says what to fix)."""

    exit_code: ClassVar[int] = EXIT_CONFIG


class ModelNotFound(FatalError):
    """HTTP 404: the model is not on the server."""


class BadRequest(FatalError):
    """Other HTTP 400s: a bad option, a bad schema, ..."""


class ServerKeepsFailing(FatalError):
    """The run's circuit breaker tripped (`chunkwise.run.breaker`): several different rows in a row failed
    with the same server error (or timed out); every answer is kept, resume once the server is fixed."""


def is_transient(exc: BaseException | None) -> bool:
    """Whether retrying the same request later may succeed (the one retry predicate)."""
    return isinstance(exc, TransientError)


def exit_code_for(exc: BaseException | None, unanswered: int = 0) -> int:
    """The exit code of a run that ended with `exc` (None: it finished, with `unanswered` requests
    failed or rejected). A chunkwise error carries its code; two foreign endings are mapped here:
    Ctrl-C reaching Python as KeyboardInterrupt (130) and a write failing with a storage errno (2)."""
    if exc is None:
        return EXIT_FAILED if unanswered else EXIT_OK
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:  # e.g. results.parquet on a full disk
        return EXIT_CONFIG
    return int(getattr(exc, "exit_code", EXIT_FAILED))
