"""Loggers that reach the Prefect UI when called inside a flow or task run, and the standard
`chunkwise.*` loggers otherwise (plain function calls, tests, the CLI before the flow starts).
Prompt and answer text is only ever logged at DEBUG.

Prefect is never imported here: when `prefect.context` is not (yet completely) imported, no flow or
task run can exist in this process, so the plain logger is returned without loading it (importing
chunkwise's logic never loads Prefect; tests/test_rules.py). "Completely" matters: `chunkwise run`
imports Prefect in a background thread during the preflight (commands/early_api.py), and a second
import from the main thread while the first is half-way is resolved by Python's import deadlock
detection with a partially initialized module: Prefect then printed "Failed to initialize plugins:
cannot import name 'SettingsContext' from partially initialized module 'prefect.context'".
"""

from __future__ import annotations

import logging
import sys

#: What `logger` returns: Prefect's run logger is a LoggerAdapter.
RunLogger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def logger(name: str) -> RunLogger:
    """The run logger inside a Prefect flow or task run, else `logging.getLogger(name)`."""
    context = sys.modules.get("prefect.context")
    if context is None or getattr(context.__spec__, "_initializing", False):
        return logging.getLogger(name)  # no run can exist before Prefect's context module is complete
    if context.TaskRunContext.get() is not None or context.FlowRunContext.get() is not None:
        from prefect.logging import get_run_logger  # complete: a run is active in this process

        return get_run_logger()
    return logging.getLogger(name)


#: Prefect's loggers that log the exception ending a task run or a flow run, with its traceback, at ERROR
#: (prefect 3.9: `task_engine.py` "Task run failed with exception ...", `flow_engine.py` "Encountered
#: exception during execution").
PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class OwnStopsWithoutTraceback(logging.Filter):
    """Drops the traceback from a record whose exception is one of chunkwise's own (`ChunkwiseError`: a breaker
    stop, a spill, a full disk): its message already says what happened and what to do, and the CLI prints it
    as its one last line. Any other exception (a bug) keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from chunkwise.errors import ChunkwiseError

        if record.exc_info and isinstance(record.exc_info[1], ChunkwiseError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_own_stops() -> None:
    """Install `OwnStopsWithoutTraceback` on Prefect's run loggers (once; the flows call it when they start)."""
    for name in PREFECT_RUN_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, OwnStopsWithoutTraceback) for f in target.filters):
            target.addFilter(OwnStopsWithoutTraceback())
