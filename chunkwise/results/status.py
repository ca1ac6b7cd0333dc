"""Where a run stands, read from its directory alone (`chunkwise status RUN_DIR`), without the UI and
without touching anything: the requests by status and failure class, the chunks checkpointed, whether a
process is working on it now (it holds the run's lock) and, if so, its rate this session and an ETA.

Read-only on purpose: a running run's ledgers are being appended to, so this reads their lines as they
are (a torn last line is skipped, never repaired) and never takes the run's lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from chunkwise.errors import SetupError
from chunkwise.store.files import read_json
from chunkwise.store.layout import RunPaths
from chunkwise.store.ledger import STAMP, decode_line
from chunkwise.store.records import Status


@dataclass
class RunStatus:
    """A run's state (counts of requests; `rate_per_s` and `eta_s` only while it runs)."""

    run_dir: str
    state: str  # "running", "finished" (results.parquet written), "stopped" (resumable) or "not started"
    owner: str  # who holds the run's lock while it runs ("" otherwise)
    total: int  # rows of the input the run reads: accepted + rejected
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    pending: int = 0  # accepted requests with no recorded outcome yet
    failed_by_class: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    chunks_done: int = 0
    session_started: str | None = None
    answered_this_session: int = 0
    rate_per_s: float | None = None
    eta_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_owner(paths: RunPaths) -> str | None:
    """Who holds the run's lock (a process working on it), or None when nobody does."""
    try:
        fd = os.open(paths.lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


Outcome = tuple[str, str | None, float | None]


def _chunk_outcomes(paths: RunPaths, index: int, since: float | None) -> dict[int, Outcome]:
    """{input row: (status, failure class, time recorded)} of one chunk: its checkpoint, then its ledger's
    lines where they may be newer (a retry of failed requests appends after the checkpoint) or were
    written this session (`since`, Unix seconds: their times give the session's rate)."""
    out: dict[int, Outcome] = {}
    checkpoint, ledger = paths.checkpoint(index), paths.ledger(index)
    if checkpoint.exists():
        try:
            table = pq.read_table(checkpoint, columns=["_row", "status", "error_class"])
            for row, status, error in zip(*(table.column(c).to_pylist() for c in ("_row", "status", "error_class")),
                                          strict=True):
                out[row] = (status, error, None)
        except (OSError, pa.ArrowException):
            pass  # torn: the ledger still holds its records
    if ledger.exists() and (not out or ledger.stat().st_mtime >= checkpoint.stat().st_mtime
                            or (since is not None and checkpoint.stat().st_mtime >= since)):
        for line in ledger.read_bytes().splitlines(keepends=True):
            record = decode_line(line)
            if record is not None and "_row" in record:
                stamp = record.get(STAMP)
                out[int(record["_row"])] = (str(record["status"]), record.get("error_class"),
                                            float(stamp) if isinstance(stamp, int | float) else None)
    return out


def run_status(run_dir: str | os.PathLike[str], now: float | None = None) -> RunStatus:
    """The state of the run in `run_dir` (see the module docstring); `SetupError` when it is not one."""
    paths = RunPaths(Path(run_dir))
    if not paths.manifest.is_file():
        if paths.root.is_dir() and paths.rejects.exists():
            rejected = pq.read_metadata(paths.rejects).num_rows
            return RunStatus(str(paths.root), "not started", "", rejected, rejected=rejected)
        raise SetupError(f"{paths.manifest} does not exist; give the directory of a run started with `chunkwise run`")
    manifest = read_json(paths.manifest)
    plan = manifest.get("chunk_plan") or {}
    accepted, chunks = int(plan.get("requests", 0)), int(plan.get("chunks", 0))
    rejected = pq.read_metadata(paths.rejects).num_rows if paths.rejects.exists() else 0
    owner = lock_owner(paths)
    state = "running" if owner else "finished" if paths.results.exists() and paths.stats.exists() else "stopped"
    status = RunStatus(str(paths.root), state, owner or "", accepted + rejected, rejected=rejected, chunks=chunks)
    sessions = manifest.get("sessions") or []
    started = sessions[-1].get("started_at") if sessions else None
    since = datetime.fromisoformat(started).timestamp() if started else None
    for index in range(chunks):
        outcomes = _chunk_outcomes(paths, index, since)
        status.chunks_done += paths.checkpoint(index).exists()
        for state_, error, stamp in outcomes.values():
            if state_ == Status.OK:
                status.ok += 1
            else:
                status.failed += 1
                key = str(error or "unknown")
                status.failed_by_class[key] = status.failed_by_class.get(key, 0) + 1
            if since is not None and stamp is not None and stamp >= since:
                status.answered_this_session += 1
    status.pending = max(0, accepted - status.ok - status.failed)
    status.session_started = started
    now = time.time() if now is None else now
    if state == "running" and since is not None and status.answered_this_session and now > since:
        status.rate_per_s = status.answered_this_session / (now - since)
        status.eta_s = status.pending / status.rate_per_s
    return status


def render(status: RunStatus) -> str:
    """The text `chunkwise status` prints."""
    by_class = ", ".join(f"{k} {v:,}" for k, v in sorted(status.failed_by_class.items()))
    lines = [f"run {status.run_dir}: {status.state}" + (f" ({status.owner})" if status.owner else ""),
             f"requests: {status.total:,}: {status.ok:,} ok, {status.failed:,} failed"
             + (f" ({by_class})" if by_class else "") + f", {status.rejected:,} rejected, {status.pending:,} to send",
             f"chunks: {status.chunks_done:,} of {status.chunks:,} checkpointed"]
    if status.session_started:
        lines.append(f"this session: started {status.session_started}, {status.answered_this_session:,} recorded")
    if status.rate_per_s is not None and status.eta_s is not None:
        lines.append(f"rate: {status.rate_per_s:.2f} requests/s this session; ETA {_duration(status.eta_s)}")
    elif status.state == "stopped" and status.pending:
        lines.append("resume: run the same command again, or `chunkwise resume " + status.run_dir + "`")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"
