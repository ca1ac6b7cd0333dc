"""How a run ends, and the exit code (`chunkwise.errors`) each ending maps to."""

from __future__ import annotations

import errno
from pathlib import Path

from chunkwise.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from chunkwise.store.files import StorageError
from chunkwise.ollama.client import FatalError
from chunkwise.run.send import RunInterrupted

#: Write failures a retry cannot cure: disk full, quota exceeded, read-only file system.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class ChunksUnfinished(RuntimeError):
    """Some chunks could not finish (transient trouble outlasted their retries); resume the run."""


def raise_for_unfinished(unfinished: list[tuple[str, BaseException]], run_dir: Path) -> None:
    """Re-raise the most important reason some chunks did not finish (fatal or storage, then interrupted)."""
    if not unfinished:
        return
    for kind in ((FatalError, StorageError), RunInterrupted):
        for _label, exc in unfinished:
            if isinstance(exc, kind):
                raise exc
    label, first = unfinished[0]
    raise ChunksUnfinished(
        f"{len(unfinished)} chunks did not finish (first: {label}: {type(first).__name__}: {first}); answered "
        f"requests are kept in {run_dir}; resume with the same run name, `chunkwise resume {run_dir}`, or Retry in Prefect"
    )


def exit_code_for(exc: BaseException | None, unanswered: int = 0) -> int:
    """`unanswered`: requests of a finished run that failed or were rejected."""
    if exc is None:
        return EXIT_FAILED if unanswered else EXIT_OK
    if isinstance(exc, RunInterrupted) or isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, (FatalError, StorageError)):
        return EXIT_CONFIG
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:  # e.g. results.parquet on a full disk
        return EXIT_CONFIG
    return EXIT_FAILED
