"""No Python traceback for an ending chunkwise meant (a `ChunkwiseError`: Ctrl-C/SIGTERM, the breaker, a full
disk, ...). Prefect's flow engine logs every exception that ends a flow run with its traceback ("Encountered
exception during execution"), so a run stopped on purpose printed some 60 lines of traceback above the one
line that says what to do (`chunkwise run: ...`; the fault matrix, bench/results/fault_matrix.md, counts that
as a traceback). The record keeps its message (the error's class and text), on the console and in Prefect's
UI; only the traceback of a purposeful error goes. Any other exception keeps it: that is a bug to report.
"""

from __future__ import annotations

import logging

from chunkwise.errors import ChunkwiseError

#: The logger Prefect's flow engine reports a flow run's exception on.
FLOW_RUN_LOGGER = "prefect.flow_runs"


class DropExpectedTraceback(logging.Filter):
    """Clears `exc_info` of a record whose exception is a `ChunkwiseError`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ChunkwiseError):
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """On Prefect's flow-run logger (a logger filter: it runs before any handler, the console's and the API's;
    Prefect's logging set-up keeps a logger's filters). Idempotent."""
    logger = logging.getLogger(FLOW_RUN_LOGGER)
    if not any(isinstance(f, DropExpectedTraceback) for f in logger.filters):
        logger.addFilter(DropExpectedTraceback())
