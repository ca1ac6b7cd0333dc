"""One process per run directory at a time.

Two processes working on the same run would both send a chunk's unanswered requests and append to
the same ledgers, paying twice. The process running a run holds an exclusive `flock` on
`<run dir>/.lock` (the kernel drops it when the process dies, so a crash never leaves a stale
lock); the file holds the owner's pid and host for the message. Re-entrant within one process:
the CLI's preflight and the flow it then runs share the lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from pathlib import Path

from chunkwise.errors import RunLocked
from chunkwise.store.layout import RunPaths

_held: dict[str, int] = {}
_lock = threading.Lock()


def acquire(run_dir: Path) -> None:
    key = str(run_dir.resolve())
    with _lock:
        if key in _held:
            return
        fd = os.open(RunPaths(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(
                f"run {run_dir.name} is in use by another chunkwise process ({owner}); wait for it to finish or "
                "stop it, or choose another --run-name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        _held[key] = fd


def release(run_dir: Path) -> None:
    key = str(run_dir.resolve())
    with _lock:
        fd = _held.pop(key, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
