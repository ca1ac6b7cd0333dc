"""The live display's model and rendering without a terminal, and the plain path when stdout is not one."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from rich.console import Console

from chunkwise.commands import display
from chunkwise.run.progress import RunProgress
from chunkwise.store.ledger import Ledger


def test_render_shows_requests_failures_rate_and_eta():
    progress = RunProgress(requests_total=600, chunks_total=6, clock=iter([0.0, 0.0, 10.0, 10.0]).__next__)
    progress.add([{"_row": i, "status": "ok"} for i in range(300)])
    progress.add([{"_row": 300, "status": "failed", "error_class": "transient"}])
    progress.chunks_done = 3
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(display.render(progress.snapshot(), "demo"))
    text = console.file.getvalue()
    assert "301/600 requests (50.2%)" in text and "chunks 3/6" in text
    assert "failed 1 (transient 1)" in text and "30.0 req/s" in text and "ETA 10 s" in text


def test_not_a_terminal_runs_plainly_and_logs_pass(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(display, "wanted", lambda stream=None: False)
    assert display.run_with_display(tmp_path, "r", 1, 1, lambda x: x * 2, 21) == 42


def test_while_live_info_lines_stay_off_the_console_and_warnings_print_above(tmp_path):
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True, color_system=None)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with display.LiveProgress(tmp_path, "r", 4, 1, console=console) as live:
            with Ledger(tmp_path / "ledger" / "chunk-00000.jsonl") as ledger:
                ledger.append({"_row": 0, "status": "ok"})
            live.live.refresh()
            logging.getLogger("x").warning("server slow")
            logging.getLogger("x").error("chunk-00001 finished: 4 ok")  # errors too go above the display
            root.setLevel(logging.INFO)
            logging.getLogger("x").info("chunk-00000 finished: 4 ok")
        logging.getLogger("x").warning("after")
    finally:
        root.removeHandler(handler)
        root.setLevel(logging.WARNING)
    assert "1/4 requests (25.0%)" in out.getvalue()
    assert "server slow" in out.getvalue() and "chunk-00000 finished" not in out.getvalue() + stream.getvalue()
    assert "server slow" not in stream.getvalue() and stream.getvalue() == "after\n"  # the gate is gone again


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_wanted_looks_at_stdout_when_called_not_when_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived process (serve, a test session) swaps sys.stdout: the check must follow it, and a
    closed stream (an earlier capture) means no terminal rather than an error that stops the run."""
    monkeypatch.setattr(sys, "stdout", _Tty())
    assert display.wanted() is True
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    assert display.wanted() is False
