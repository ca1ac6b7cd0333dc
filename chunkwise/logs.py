"""Loggers that reach the Prefect UI when called inside a flow or task run, and the standard
`chunkwise.*` loggers otherwise (plain function calls, tests, the CLI before the flow starts).
Prompt and answer text is only ever logged at DEBUG.
"""

from __future__ import annotations

import logging


def logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.logging import get_run_logger

        if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
            return get_run_logger()
    except ImportError:  # pragma: no cover - prefect is a dependency
        pass
    return logging.getLogger(name)
