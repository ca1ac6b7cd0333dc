"""Durable, contained file writes.

Every file a run writes goes through `write_atomic`: the bytes land in a temporary file in the same
directory, are fsynced, and replace the target with `os.replace`, after which the directory entry
is fsynced too. A crash therefore leaves either the old file or the new one, never a torn one.

`contained(base, *parts)` joins paths and refuses any result outside `base`, so no run name, chunk
label or user-supplied fragment can write outside the run's output directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from chunkwise.errors import UnsafePathError


def contained(base: Path, *parts: str) -> Path:
    """`base / parts...`, resolved, refusing anything that escapes `base`."""
    root = base.resolve()
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise UnsafePathError(f"{'/'.join(parts)!r} would write outside {root}; use a plain name inside it")
    return target


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create `path` and any missing parents, fsyncing the directory above each one created, so a
    file made durable inside it cannot vanish with its directory after a power loss."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_dir(directory.parent)


def write_atomic(path: Path, write: Callable[[BinaryIO], Any] | bytes) -> None:
    """Write `path` atomically: `write` is bytes, or a callable that writes into a binary file."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, (bytes, bytearray)):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
