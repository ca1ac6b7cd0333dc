"""One sender per chunk across processes and hosts.

In distributed mode several shard flows, on several machines, work in one run directory on shared
storage. Two of them sending the same chunk would both send its unanswered requests and append to
the same ledger, paying twice. Before a process touches chunk *i* it takes an exclusive,
non-blocking `flock` on `<run dir>/locks/chunk-NNNNN.lock`; if another process holds it, the chunk
is skipped (`ChunkBusy`), never waited for: the parent re-dispatches whatever is left without a
checkpoint.

The kernel drops the lock when its process dies, so a crashed shard never leaves a stale lock. On
NFS, Linux emulates `flock` with a whole-file byte-range lock (flock(2), "NFS details", since Linux
2.6.12); NFSv4 locks are leases, so a lost machine's lock is freed when its lease expires (tens of
seconds), not at once.

Within one process the lock is not re-entrant: a chunk runs once at a time per process, and a second
`hold` of the same chunk from the same process is refused like one from another process (flock
locks belong to the open file description, so a second `open` would conflict with the first).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chunkwise.errors import ChunkBusy
from chunkwise.store.layout import RunPaths

__all__ = ["ChunkBusy", "hold", "owner", "release", "try_acquire"]

_held: dict[str, int] = {}
_guard = threading.Lock()


def lock_path(run_dir: Path, index: int) -> Path:
    return RunPaths(Path(run_dir)).chunk_lock(index)


def shard_lock_path(run_dir: Path, shard: int, attempt: int) -> Path:
    """Held by a shard run for its whole life: free while its state says Running means its process is
    gone (killed, or its machine lost) and nobody will report its end."""
    return RunPaths(Path(run_dir)).shard_lock(shard, attempt)


def _key(path: Path) -> str:
    """One key per lock file however it is named (symlinks resolved, missing parts kept)."""
    return os.path.realpath(path)


def try_acquire(run_dir: Path, index: int) -> bool:
    """Take chunk `index`'s lock without waiting; False when another holder has it (or this process
    already holds it). The lock file records `pid P on HOST` for messages."""
    return try_acquire_path(lock_path(run_dir, index))


def try_acquire_path(path: Path) -> bool:
    """Take the lock at `path` without waiting (see `try_acquire`)."""
    key = _key(path)
    with _guard:
        if key in _held:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        _held[key] = fd
        return True


def owner(run_dir: Path, index: int) -> str:
    """Who holds (or last held) the lock, as written by its holder; for messages only."""
    try:
        return lock_path(run_dir, index).read_text(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def release(run_dir: Path, index: int) -> None:
    """Give up chunk `index`'s lock if this process holds it. The file stays (removing it would let a
    process that opened the old inode and one that creates a new one both "hold" the lock)."""
    release_path(lock_path(run_dir, index))


def release_path(path: Path) -> None:
    key = _key(path)
    with _guard:
        fd = _held.pop(key, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_held(path: Path) -> bool:
    """Whether some live process holds the lock at `path` (probes by taking it and letting go). A
    lock this process holds counts as held."""
    if not path.exists():
        return False
    if not try_acquire_path(path):
        return True
    release_path(path)
    return False


@contextmanager
def hold(run_dir: Path, index: int) -> Iterator[None]:
    """Hold chunk `index` for the block, or raise `ChunkBusy` at once when someone else holds it."""
    if not try_acquire(run_dir, index):
        raise ChunkBusy(index, owner(run_dir, index))
    try:
        yield
    finally:
        release(run_dir, index)
