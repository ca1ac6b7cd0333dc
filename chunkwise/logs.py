"""Loggers that reach the Prefect UI when called inside a flow or task run, and the standard
`chunkwise.*` loggers otherwise (plain function calls, tests, the CLI before the flow starts).
Prompt and answer text is only ever logged at DEBUG.

Prefect is imported only when a run could be active: when nothing has imported `prefect` yet, no
flow or task run exists in this process, so the plain logger is returned without loading it
(importing chunkwise's logic never loads Prefect; tests/test_rules.py).
"""

from __future__ import annotations

import logging
import sys

#: What `logger` returns: Prefect's run logger is a LoggerAdapter.
RunLogger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def logger(name: str) -> RunLogger:
    """The run logger inside a Prefect flow or task run, else `logging.getLogger(name)`."""
    if "prefect" not in sys.modules:
        return logging.getLogger(name)
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging import get_run_logger

    if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
        return get_run_logger()
    return logging.getLogger(name)
