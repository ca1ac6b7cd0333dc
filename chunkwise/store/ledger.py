"""The per-request ledger: one append-only file per chunk, one line per finished request.

A request is finished when it has an answer or has exhausted its retry budget; its record is
written, flushed and fsynced before the chunk sends anything that depends on it, so a crash loses
at most the requests that were in flight. A retried or resumed chunk sends only the rows the
ledger does not hold (plus, with `--retry-failed`, the rows whose latest record failed).

Line format: `<crc32 of the JSON, 8 hex digits> <JSON record>\\n`. Each line also carries `_t`, the
wall-clock time (Unix seconds, ms precision) the record was written: the run's statistics count the
requests answered in each session from it, and a crashed session's active time ends at its last
record (`chunkwise.results.sessions`). `load` strips it, so the records are exactly what was appended.

A line that does not parse or does not match its checksum (a torn tail after a crash, a flipped
bit) is never trusted: `load` drops it, counts it, and rewrites the file without it so the next
append starts on a clean line.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import orjson

from chunkwise.store.files import ensure_dir, fsync_dir, write_atomic

#: The key of a line's write time (Unix seconds); not part of the record.
STAMP = "_t"


def encode_line(record: dict[str, Any]) -> bytes:
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
        #: Lines dropped by the last `load` because they were torn or corrupt.
        self.dropped = 0

    def load(self) -> dict[int, dict[str, Any]]:
        """The latest valid record per input row (`_row`). Repairs a torn or corrupt file."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        lines = raw.splitlines(keepends=True)
        latest: dict[int, dict[str, Any]] = {}
        good: list[bytes] = []
        for line in lines:
            record = decode_line(line)
            if record is None or "_row" not in record:
                self.dropped += 1
                continue
            good.append(line)
            record.pop(STAMP, None)
            latest[int(record["_row"])] = record
        if self.dropped:
            write_atomic(self.path, b"".join(good))
        return latest

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (write, flush, fsync) before returning."""
        line = encode_line({**record, STAMP: round(time.time(), 3)})
        with self._lock:
            if self._fd is None:
                ensure_dir(self.path.parent)
                created = not self.path.exists()
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                if created:  # the new file's directory entry must be as durable as its lines
                    fsync_dir(self.path.parent)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
