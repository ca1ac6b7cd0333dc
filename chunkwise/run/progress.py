"""Progress of a run, request by request, read from its ledger files (pure: no Prefect, no terminal).

Every finished request is one ledger line, fsynced when it is appended (`chunkwise.store.ledger`),
so the ledger directory is the progress signal: `LedgerTail` reads only the complete lines added
since its last poll, and `RunProgress` turns them into counts, failures by class, a request rate
and an ETA. The flow's progress artifact (`tasks/progress.py`) and the terminal display
(`chunkwise.commands.display`) each poll a tail of their own; nothing is shared between threads or
processes except the files, and a poll costs only the bytes appended since the last one.

Records present when a tail starts belong to earlier sessions (a resume): they count as done but
not in this session's rate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.store.layout import RunPaths
from chunkwise.store.ledger import decode_line
from chunkwise.store.records import Status


class LedgerTail:
    """Incremental reader of `<run dir>/ledger/chunk-*.jsonl`: each poll returns the new complete lines."""

    def __init__(self, ledger_dir: Path) -> None:
        self.dir = ledger_dir
        self._offsets: dict[str, int] = {}

    def poll(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The valid records appended since the last poll (a torn tail is left for the next one), from
        every ledger file or only from `names` (file names in the ledger directory).

        A file whose size is the offset already read is not opened: a run of 1,532 chunks is polled
        every second and at every chunk's end, and most of its files are finished or not begun."""
        if names is None:
            try:
                names = sorted(os.listdir(self.dir))
            except FileNotFoundError:
                return []
        records: list[dict[str, Any]] = []
        for name in names:
            if not (name.startswith("chunk-") and name.endswith(".jsonl")):
                continue
            offset = self._offsets.get(name, 0)
            try:
                size = os.stat(self.dir / name).st_size
                if size == offset:
                    continue
                with open(self.dir / name, "rb") as handle:
                    if size < offset:  # rewritten by a repair: read it again
                        offset = 0
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1  # only complete lines; the rest is still being written
            for line in data[:end].splitlines(keepends=True):
                record = decode_line(line)
                if record is not None and "_row" in record:
                    records.append(record)
            self._offsets[name] = offset + end
        return records


@dataclass(frozen=True)
class Snapshot:
    """What a person wants to know about a running run, at one moment."""

    requests_total: int
    requests_done: int
    ok: int
    failed_by_class: dict[str, int]
    #: Requests finished in this session (the rate's numerator).
    session_done: int
    #: Requests per second in this session, from its first to its latest finished request; None before two.
    rate: float | None
    #: Seconds until every request is finished at `rate`; None while unknown.
    eta_s: float | None
    chunks_done: int
    chunks_total: int
    elapsed_s: float

    @property
    def percent(self) -> float:
        return round(100.0 * self.requests_done / self.requests_total, 2) if self.requests_total else 100.0

    @property
    def failed(self) -> int:
        return sum(self.failed_by_class.values())

    def line(self) -> str:
        """One plain log line: `412/600 requests (68.7%), 3 failed (transient 3), 10.4 req/s, ETA 18 s, 4/6 chunks`."""
        failures = ", ".join(f"{k} {v}" for k, v in sorted(self.failed_by_class.items()) if v)
        failed = f"{self.failed} failed ({failures})" if self.failed else "0 failed"
        rate = f"{self.rate:.1f} req/s" if self.rate is not None else "req/s pending"
        return (f"{self.requests_done}/{self.requests_total} requests ({self.percent:.1f}%), {failed}, {rate}, "
                f"ETA {format_eta(self.eta_s)}, {self.chunks_done}/{self.chunks_total} chunks")


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


@dataclass
class RunProgress:
    """Counts of a run's finished requests by row (the latest record of a row wins, as in the ledger)."""

    requests_total: int
    chunks_total: int
    clock: Callable[[], float] = time.monotonic
    chunks_done: int = 0
    _status: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    _ok: int = 0
    _failed: dict[str, int] = field(default_factory=dict)
    _session_done: int = 0
    _first_at: float | None = None
    _last_at: float | None = None
    _started: float = 0.0

    def __post_init__(self) -> None:
        self._started = self.clock()

    def add(self, records: list[dict[str, Any]], *, earlier_session: bool = False) -> None:
        """Count finished requests; `earlier_session` for what the ledger held before this session."""
        now = self.clock()
        for record in records:
            row = int(record["_row"])
            self._forget(row)
            status, error = str(record.get("status")), record.get("error_class")
            self._status[row] = (status, error)
            if status == Status.OK:
                self._ok += 1
            elif status == Status.FAILED:
                key = str(error or "unknown")
                self._failed[key] = self._failed.get(key, 0) + 1
        if records and not earlier_session:
            self._session_done += len(records)
            self._first_at = now if self._first_at is None else self._first_at
            self._last_at = now

    def _forget(self, row: int) -> None:
        previous = self._status.get(row)
        if previous is None:
            return
        status, error = previous
        if status == Status.OK:
            self._ok -= 1
        elif status == Status.FAILED:
            key = str(error or "unknown")
            self._failed[key] -= 1

    def snapshot(self) -> Snapshot:
        done = len(self._status)
        rate = None
        if self._first_at is not None and self._last_at is not None and self._session_done >= 2:
            span = self._last_at - self._first_at
            rate = (self._session_done - 1) / span if span > 0 else None
        remaining = max(self.requests_total - done, 0)
        eta = 0.0 if remaining == 0 else (remaining / rate if rate else None)
        return Snapshot(
            requests_total=self.requests_total, requests_done=done, ok=self._ok,
            failed_by_class={k: v for k, v in self._failed.items() if v}, session_done=self._session_done,
            rate=rate, eta_s=eta, chunks_done=self.chunks_done, chunks_total=self.chunks_total,
            elapsed_s=self.clock() - self._started,
        )


class ProgressWatch:
    """A tail and a model together: `start()` takes what the ledger already holds as earlier sessions'
    work, each `poll()` adds what was appended since and returns whether anything changed."""

    def __init__(self, run_dir: Path, requests_total: int, chunks_total: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tail = LedgerTail(RunPaths(Path(run_dir)).ledger_dir)
        self.model = RunProgress(requests_total, chunks_total, clock=clock)

    def start(self) -> ProgressWatch:
        self.model.add(self.tail.poll(), earlier_session=True)
        return self

    def poll(self, names: Iterable[str] | None = None) -> bool:
        records = self.tail.poll(names)
        self.model.add(records)
        return bool(records)
