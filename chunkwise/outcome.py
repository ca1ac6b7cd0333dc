"""How a run ends, and the exit code each ending maps to.

    0    every request answered
    1    finished, but some requests failed (see results.parquet); or chunks left unfinished by a
         transient outage -- resumable with the same run name, `chunkwise resume`, or Prefect's Retry
    2    bad input, bad configuration, unreachable server, a fatal server answer (model not found),
         or a run directory that cannot be written (disk full): fix it, then resume
    130  stopped by Ctrl-C or SIGTERM; resumable
"""

from __future__ import annotations

import errno
from pathlib import Path

from chunkwise.files import StorageError
from chunkwise.ollama import FatalError
from chunkwise.send import RunInterrupted

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130
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


def exit_code_for(exc: BaseException | None, failed_requests: int = 0) -> int:
    if exc is None:
        return EXIT_FAILED if failed_requests else EXIT_OK
    if isinstance(exc, RunInterrupted) or isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, (FatalError, StorageError)):
        return EXIT_CONFIG
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:  # e.g. results.parquet on a full disk
        return EXIT_CONFIG
    return EXIT_FAILED
