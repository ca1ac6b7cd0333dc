"""No Python traceback for an ending chunkwise meant (a `ChunkwiseError`: Ctrl-C/SIGTERM, the breaker, a full
disk, ...) or one the Prefect API caused (it went away, or answered 5xx, mid-run: its client's httpx error).
Prefect's flow engine logs every exception that ends a flow run with its traceback ("Encountered
exception during execution"), so a run stopped on purpose printed some 60 lines of traceback above the one
line that says what to do (`chunkwise run: ...`; the fault matrix, bench/results/fault_matrix.md, counts that
as a traceback). The record keeps its message (the error's class and text), on the console and in Prefect's
UI; only the traceback of a purposeful error goes. Any other exception keeps it: that is a bug to report.
`describe` turns an API failure into a line that says what happened and what to do.
"""

from __future__ import annotations

import logging
import os

import httpx

from chunkwise.errors import ChunkwiseError

#: The logger Prefect's flow engine reports a flow run's exception on.
FLOW_RUN_LOGGER = "prefect.flow_runs"


class DropExpectedTraceback(logging.Filter):
    """Clears `exc_info` of a record whose exception is a `ChunkwiseError`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ChunkwiseError) or prefect_api_failure(exc) is not None:
            record.exc_info, record.exc_text = None, None
        return True


def prefect_api_failure(exc: BaseException | None) -> str | None:
    """`host:port` of the Prefect API when `exc` is its client's transport or status error: a request to
    PREFECT_API_URL (set during a run, to the temporary server too). The LLM backends wrap their own httpx
    errors in chunkwise's, so none of theirs is taken for the API's."""
    if not isinstance(exc, httpx.TransportError | httpx.HTTPStatusError):
        return None
    try:
        url = exc.request.url
    except RuntimeError:  # no request attached
        return None
    api = httpx.URL(os.environ.get("PREFECT_API_URL", ""))
    return f"{url.host}:{url.port}" if api.host and (url.host, url.port) == (api.host, api.port) else None


def describe(exc: BaseException) -> str:
    """The text of a run's stop line: the error's own, or for a Prefect API failure what happened and what to do."""
    where = prefect_api_failure(exc)
    if where is None:
        return str(exc)
    reason = (f"HTTP {exc.response.status_code}" if isinstance(exc, httpx.HTTPStatusError)
              else str(exc) or type(exc).__name__)
    return (f"the Prefect API at {where} failed mid-run ({reason}); every answer already in the ledger is kept: "
            f"run the same command again once the API answers (without PREFECT_API_URL it starts a new one)")


def install() -> None:
    """On Prefect's flow-run logger (a logger filter: it runs before any handler, the console's and the API's;
    Prefect's logging set-up keeps a logger's filters). Idempotent."""
    logger = logging.getLogger(FLOW_RUN_LOGGER)
    if not any(isinstance(f, DropExpectedTraceback) for f in logger.filters):
        logger.addFilter(DropExpectedTraceback())
