"""A purposeful ending (a ChunkwiseError) is logged without its traceback; any other exception keeps it."""

from __future__ import annotations

import logging
import sys

from chunkwise.commands.expected_errors import DropExpectedTraceback, install
from chunkwise.errors import RunInterrupted


def record_for(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1,
                             "Encountered exception during execution: %r", (exc,), info)


def test_a_chunkwise_error_keeps_its_message_and_loses_its_traceback():
    record = record_for(RunInterrupted("stopped on request"))
    assert DropExpectedTraceback().filter(record) is True
    text = logging.Formatter().format(record)
    assert "Traceback" not in text and "RunInterrupted('stopped on request')" in text


def test_any_other_exception_keeps_its_traceback():
    record = record_for(KeyError("bug"))
    assert DropExpectedTraceback().filter(record) is True
    assert "Traceback (most recent call last)" in logging.Formatter().format(record)


def test_install_puts_one_filter_on_the_flow_run_logger():
    logger = logging.getLogger("prefect.flow_runs")
    before = list(logger.filters)
    try:
        install()
        install()
        assert sum(isinstance(f, DropExpectedTraceback) for f in logger.filters) == 1
    finally:
        logger.filters[:] = before
