"""Durable, contained file writes.

Every file a run writes goes through `write_atomic`: the bytes land in a temporary file in the same
directory, are fsynced, and replace the target with `os.replace`, after which the directory entry
is fsynced too. A crash therefore leaves either the old file or the new one, never a torn one.

`contained(base, *parts)` joins paths and refuses any result outside `base`, so no run name, chunk
label or user-supplied fragment can write outside the run's output directory.

Permissions: prompts and answers are often private, so what chunkwise creates is its owner's only
(setting `file_mode`: private = directories 0700, files 0600; group = 0750 / 0640 for a runs root a
group shares). `apply_umask` sets the process umask to match, which covers every writer (the ledger,
Parquet files, locks, Prefect's result files, a Prefect server's database started from here);
directories made by `ensure_dir` and files made by `write_atomic` get their mode explicitly as well.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from chunkwise.errors import UnsafePathError
from chunkwise.settings import get_settings

#: CHUNKWISE_FILE_MODE -> (directory mode, file mode, process umask).
MODES = {"private": (0o700, 0o600, 0o077), "group": (0o750, 0o640, 0o027)}


def modes() -> tuple[int, int, int]:
    """(directory mode, file mode, umask) of the `file_mode` setting."""
    return MODES[get_settings().file_mode]


def apply_umask() -> int:
    """Set the process umask to the `file_mode` setting's (inherited by every child process); returns
    the previous one."""
    return os.umask(modes()[2])


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
    while not path.exists():  # a file in the way fails the mkdir below it (NotADirectoryError)
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    dir_mode = modes()[0]
    for directory in reversed(missing):
        directory.mkdir(mode=dir_mode, exist_ok=True)
        os.chmod(directory, dir_mode)  # exactly, whatever the umask
        fsync_dir(directory.parent)


def write_atomic(path: Path, write: Callable[[BinaryIO], Any] | bytes) -> None:
    """Write `path` atomically: `write` is bytes, or a callable that writes into a binary file."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), modes()[1])  # mkstemp's 0600, or the group's 0640
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
