"""A purposeful ending (a ChunkwiseError) is logged without its traceback; any other exception keeps it."""

from __future__ import annotations

import logging
import sys

import httpx

from chunkwise.commands.expected_errors import DropExpectedTraceback, install
from chunkwise.errors import RunInterrupted


def record_for(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - the record of any exception
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


def test_a_prefect_api_failure_names_the_api_and_the_remedy_in_one_line(monkeypatch):
    from chunkwise.commands.expected_errors import describe, prefect_api_failure

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    refused = httpx.ConnectError("[Errno 111] Connection refused",
                                 request=httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/filter"))
    line = describe(refused)
    assert "Prefect API at 127.0.0.1:4200" in line and "run the same command again" in line
    assert "\n" not in line
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/logs/")
    status = httpx.HTTPStatusError("500", request=request, response=httpx.Response(500, request=request))
    assert "(HTTP 500)" in describe(status)
    record = record_for(refused)
    DropExpectedTraceback().filter(record)
    assert record.exc_info is None
    # the same error from another server (an LLM backend would wrap it; a bare one is a bug): text unchanged
    other = httpx.ConnectError("refused", request=httpx.Request("POST", "http://127.0.0.1:11434/api/chat"))
    assert prefect_api_failure(other) is None and describe(other) == "refused"
