"""A run directory's staged input, re-opened: what it was staged from (`staged.json`) and its
`StagedInput` rebuilt from the staged files (a resume needs neither the user's file nor a second
staging pass; `chunkwise.inputs.stage` wrote them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from chunkwise.inputs.scan import carried_columns
from chunkwise.inputs.stage import StagedInput
from chunkwise.inputs.summary import FIRST_REJECTS_KEPT, HISTORY_COLUMN, REASON_COLUMN, ROW_COLUMN, Reject
from chunkwise.store.files import read_json
from chunkwise.store.layout import RunPaths


def staged_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the run directory's staged files were made from (`fingerprint`, `num_ctx`,
    `num_predict`: the limits decide the quarantine), or None when staging never completed."""
    paths = RunPaths(Path(run_dir))
    if not (paths.staged.exists() and paths.requests.exists() and paths.rejects.exists()):
        return None
    marker_data: dict[str, Any] = read_json(paths.staged)
    return marker_data


def load_staged(run_dir: str | os.PathLike[str], *, source: str, fingerprint: str, num_ctx: int,
                num_predict: int) -> StagedInput:
    """The StagedInput of a run staged earlier, rebuilt from its files (a resume needs neither the
    original input nor a second staging pass). Streams only row numbers and prompt lengths."""
    import polars as pl

    paths = RunPaths(Path(run_dir))
    requests, rejects = paths.requests, paths.rejects
    schema = pq.read_schema(requests)
    has_system = "system" in schema.names
    chars = pl.col("prompt").str.len_chars().cast(pl.Int64)
    chats = HISTORY_COLUMN in schema.names
    if chats:  # as the scan counts them (`chunkwise.inputs.columns.history_chars`)
        earlier = pl.col(HISTORY_COLUMN).list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()
        chars = chars + earlier.cast(pl.Int64).fill_null(0)
    lengths = [pl.col(ROW_COLUMN), chars.alias("p"),
               (pl.col(HISTORY_COLUMN).is_not_null() if chats else pl.lit(False)).alias("h")]
    if has_system:
        lengths.append(pl.col("system").str.len_chars().cast(pl.Int64).alias("s"))
    table = pl.scan_parquet(requests).select(lengths).collect(engine="streaming").to_arrow()
    bad = pq.read_table(rejects, columns=[ROW_COLUMN, "id", REASON_COLUMN]).to_pylist() if rejects.exists() else []
    return StagedInput(
        path=source, rows=table.num_rows + len(bad), accepted=table.num_rows, rejected=len(bad),
        id_dtype=str(schema.field("id").type), carried_columns=carried_columns(schema.remove(0)), has_system=has_system,
        num_ctx=num_ctx, num_predict=num_predict,
        first_rejects=tuple(Reject(r[ROW_COLUMN], r["id"], r[REASON_COLUMN]) for r in bad[:FIRST_REJECTS_KEPT]),
        longest=(), accepted_rows=table.column(ROW_COLUMN).combine_chunks(),
        prompt_chars=table.column("p").combine_chunks(),
        system_chars=table.column("s").combine_chunks() if has_system else None,
        history_rows=sum(1 for h in table.column("h").to_pylist() if h),
        fingerprint=fingerprint, run_dir=str(run_dir), requests_path=str(requests), rejects_path=str(rejects),
    )
