"""The live progress display of `chunkwise run` on a terminal (rich), and plain log lines elsewhere.

On a terminal the run shows one display that redraws twice a second -- a bar, requests and chunks
done, failures by class, requests/s and an ETA -- instead of a scroll of per-chunk log lines: while
it is live, log records below WARNING are kept off the console (they still reach Prefect's API and
UI), and warnings and errors are printed above the display. When the output is not a terminal (CI,
a file) nothing changes: the flow's log lines, including its progress line every 10 s, are the
record. The display reads the run's ledger (`chunkwise.run.progress`), so it needs nothing from the
flow but the run directory.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from chunkwise.run.progress import ProgressWatch, Snapshot, format_eta
from chunkwise.store.layout import RunPaths


def wanted(stream: TextIO | None = None) -> bool:
    """A live display only on a terminal. The stream is looked up at call time: a default bound at
    import would keep whatever `sys.stdout` was then (a closed capture, in a long-lived process)."""
    out = stream if stream is not None else sys.stdout
    try:
        return out.isatty()
    except ValueError:  # a closed stream is no terminal
        return False


def render(snap: Snapshot, run_name: str) -> RenderableType:
    """The display's content for one snapshot (pure: testable without a terminal)."""
    failures = ", ".join(f"{k} {v}" for k, v in sorted(snap.failed_by_class.items())) or "none"
    rate = f"{snap.rate:.1f}" if snap.rate is not None else "-"
    head = Text.assemble((f"chunkwise run {run_name}  ", "bold"),
                         f"{snap.requests_done:,}/{snap.requests_total:,} requests ({snap.percent:.1f}%)")
    bar = ProgressBar(total=max(snap.requests_total, 1), completed=snap.requests_done, width=60)
    tail = Text(f"chunks {snap.chunks_done}/{snap.chunks_total}   ok {snap.ok:,}   failed {snap.failed:,} "
                f"({failures})   {rate} req/s   ETA {format_eta(snap.eta_s)}")
    grid = Table.grid()
    for line in (head, bar, tail):
        grid.add_row(line)
    return grid


class _ConsoleGate(logging.Filter):
    """On the console handlers while the display is live: below WARNING dropped, the rest printed above it."""

    def __init__(self, console: Console, handler: logging.Handler) -> None:
        super().__init__()
        self.console, self.handler = console, handler

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.console.print(Text(self.handler.format(record)))
        return False


class LiveProgress:
    """`with LiveProgress(run_dir, name, requests, chunks):` shows the display while the block runs."""

    def __init__(self, run_dir: Path, run_name: str, requests_total: int, chunks_total: int,
                 console: Console | None = None) -> None:
        self.run_name = run_name
        self.watch = ProgressWatch(run_dir, requests_total, chunks_total).start()
        self.console = console or Console(file=sys.stdout)
        self.live = Live(console=self.console, refresh_per_second=2, get_renderable=self._renderable,
                         redirect_stdout=True, redirect_stderr=True)
        self._gates: list[tuple[logging.Handler, _ConsoleGate]] = []

    def _renderable(self) -> RenderableType:
        self.watch.poll()
        self.watch.model.chunks_done = _chunks_done(self.watch)
        return render(self.watch.model.snapshot(), self.run_name)

    def __enter__(self) -> LiveProgress:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                gate = _ConsoleGate(self.console, handler)
                handler.addFilter(gate)
                self._gates.append((handler, gate))
        self.live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.live.stop()
        for handler, gate in self._gates:
            handler.removeFilter(gate)


def _chunks_done(watch: ProgressWatch) -> int:
    """Chunks with a checkpoint file: the display's chunk count, from the run directory like the rest."""
    chunks = RunPaths(watch.tail.dir.parent).chunks_dir
    try:
        return sum(1 for p in chunks.iterdir() if p.name.startswith("chunk-") and p.suffix == ".parquet")
    except FileNotFoundError:
        return 0


def run_with_display(run_dir: Path, run_name: str, requests_total: int, chunks_total: int, fn: Any,
                     *args: Any) -> Any:
    """`fn(*args)` under the live display when stdout is a terminal, plainly otherwise."""
    if not wanted():
        return fn(*args)
    with LiveProgress(run_dir, run_name, requests_total, chunks_total):
        return fn(*args)
