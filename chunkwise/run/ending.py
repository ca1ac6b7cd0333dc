"""How a run ends: the one reason that explains why chunks did not finish (`chunkwise.errors`
gives each reason its exit code)."""

from __future__ import annotations

from pathlib import Path

from chunkwise.errors import ChunksUnfinished, ChunkwiseError, FatalError, RunInterrupted, StorageError


def raise_for_unfinished(unfinished: list[tuple[str, BaseException]], run_dir: Path) -> None:
    """Re-raise the most important reason some chunks did not finish (fatal or storage, then
    interrupted), naming the chunk it happened in."""
    if not unfinished:
        return
    for kind in ((FatalError, StorageError), (RunInterrupted,)):
        for label, exc in unfinished:
            if isinstance(exc, kind) and isinstance(exc, ChunkwiseError):
                raise exc.at(chunk=label)
    label, first = unfinished[0]
    raise ChunksUnfinished(
        f"{len(unfinished)} chunks did not finish (first: {label}: {type(first).__name__}: {first}); answered "
        f"requests are kept in {run_dir}; resume with the same run name, `chunkwise resume {run_dir}`, "
        "or Retry in Prefect"
    )
