"""The per-request ledger: one append-only file per chunk, one line per finished request.

A request is finished when it has an answer or has exhausted its retry budget; its record is
written and fsynced before `append` returns and the request counts as done (an fsync may be shared
by the records that finished together: group commit, see `Ledger.append`), so a crash loses at most
the requests that were in flight or whose `append` had not returned. A retried or resumed chunk sends only the rows the
ledger does not hold (plus, with `--retry-failed`, the rows whose latest record failed).

Line format: `<crc32 of the JSON, 8 hex digits> <JSON record>\\n`. Each line also carries `_t`, the
wall-clock time (Unix seconds, ms precision) the record was written: the run's statistics count the
requests answered in each session from it, and a crashed session's active time ends at its last
record (`chunkwise.results.sessions`). `load` strips it, so the records are exactly what was appended.

A line that does not parse or does not match its checksum (a torn tail after a crash, a flipped
bit) is never trusted: `load` drops it, counts it, and rewrites the file without it so the next
append starts on a clean line.

Closing. A chunk that stops early (Ctrl-C, a fatal error in another request, a cancelled task) may
close its ledger while request threads are still appending. The contract: an append that returns
has its line fsynced (by its own fsync, one it shared, or the close's); an append racing `close`
either completes durably or raises a `ChunkwiseError` (never returns unsynced, never hangs beyond
the fsync under way). `close` waits for an fsync in progress, then fsyncs the lines written but not
yet covered, so the appends that had written theirs complete durably; if that fsync fails, those
appends raise `StorageError` instead of returning. An append that starts after `close` raises
`RunInterrupted` and writes nothing: a closed ledger is never reopened (the chunk's lock may already
belong to another process), and the unacknowledged request is sent again on resume.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import orjson

from chunkwise.errors import RunInterrupted, StorageError
from chunkwise.store.files import ensure_dir, fsync_dir, write_atomic
from chunkwise.store.records import OutcomeRecord

#: The key of a line's write time (Unix seconds); not part of the record.
STAMP = "_t"


def encode_line(record: Mapping[str, Any]) -> bytes:
    payload = orjson.dumps(record, default=str)
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of one line, or None when the line is torn or corrupt."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        record = orjson.loads(payload)
    except (ValueError, orjson.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


class Ledger:
    """Thread-safe append-only record of finished requests for one chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        #: Group commit (see `append`): lines written to the file, and of those, covered by a finished fsync.
        self._sync_lock = threading.Lock()
        self._written = self._synced = 0
        #: Set by `close` (for good: see the module docstring); the close's fsync error, if it failed.
        self._closed = False
        self._close_failure: OSError | None = None
        #: Appends that returned without an fsync of their own (an fsync shared with other appends).
        self.syncs_saved = 0
        #: Lines dropped by the last `load` because they were torn or corrupt.
        self.dropped = 0

    def load(self) -> dict[int, OutcomeRecord]:
        """The latest valid record per input row (`_row`). Repairs a torn or corrupt file."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        lines = raw.splitlines(keepends=True)
        latest: dict[int, OutcomeRecord] = {}
        good: list[bytes] = []
        for line in lines:
            record = decode_line(line)
            if record is None or "_row" not in record:
                self.dropped += 1
                continue
            good.append(line)
            record.pop(STAMP, None)
            latest[int(record["_row"])] = cast(OutcomeRecord, record)  # what `outcome` wrote; the CRC held
        if self.dropped:
            write_atomic(self.path, b"".join(good))
        return latest

    def append(self, record: OutcomeRecord) -> None:
        """Write one record durably (write, then fsync) before returning: the caller may count the
        request as done, and never send it again, once this returns.

        Group commit: the write happens under the write lock, the fsync under a separate sync lock,
        and one fsync covers every line written before it started. A thread whose line an fsync
        started after its write has already covered returns without an fsync of its own, so the
        answers that finished together share one fsync, and a slow fsync does not hold up the
        writes of the requests finishing meanwhile. A crash between a write and its fsync loses
        only lines whose `append` had not returned (nothing acknowledged); `load` drops a torn tail.
        """
        line = encode_line({**record, STAMP: round(time.time(), 3)})
        row = record.get("_row")
        with self._lock:
            self._refuse_if_closed(row)
            if self._fd is None:
                ensure_dir(self.path.parent)
                created = not self.path.exists()
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                if created:  # the new file's directory entry must be as durable as its lines
                    fsync_dir(self.path.parent)
            fd = self._fd
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            self._written += 1
            mine = self._written
        with self._sync_lock:
            if self._synced >= mine:  # an fsync that started after this write has finished
                self.syncs_saved += 1
                return
            with self._lock:  # every line counted here is fully written: the fsync below covers it
                covered, closed = self._written, self._closed
            if closed:  # `close` fsynced every written line, so only a failed fsync of its own leads here
                failure = self._close_failure
                raise StorageError(
                    f"cannot make {self.path} durable ({failure.strerror if failure else 'closed'}); this answer "
                    "is not counted as done: fix the run directory, then resume the run with the same name"
                ).at(row=row if isinstance(row, int) else None) from failure
            os.fsync(fd)  # `fd` is still open: `close` needs the sync lock held here
            self._synced = covered

    def _refuse_if_closed(self, row: object) -> None:
        if self._closed:
            raise RunInterrupted(
                f"the ledger {self.path} was closed (its chunk stopped) before this answer was recorded; it "
                "is not counted as done: resume the run with the same name to send the request again"
            ).at(row=row if isinstance(row, int) else None)

    def close(self) -> None:
        """Wait for an fsync in progress (never close the file under it), fsync the lines written
        since (their appends then return acknowledged), close the file, and refuse later appends."""
        with self._sync_lock, self._lock:
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                if self._synced < self._written:
                    os.fsync(fd)
                    self._synced = self._written
            except OSError as exc:  # the appends waiting for these lines raise it; a close in __exit__ must not
                self._close_failure = exc
            finally:
                os.close(fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
