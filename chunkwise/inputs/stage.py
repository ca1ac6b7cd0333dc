"""Staging the request file into the run directory, and the chunk reads from it.

`stage_input` runs the validation scan of `chunkwise.inputs.scan` and writes `run_dir/requests.parquet`
(accepted rows in input order, `_row` = input row number counting from 0, then all original
columns) in row groups of `STAGED_ROW_GROUP_ROWS`, so that `read_requests` decodes only the one or
two row groups a chunk touches, and `run_dir/rejects.parquet` (`_row`, `id`, `_reason`, carried
columns). Both appear atomically, and only after the whole input was read. From then on the run
depends on the staged copy alone: chunk tasks read their rows from it, never from the user's file.
A resume re-opens what was staged with `chunkwise.inputs.staged`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from chunkwise.inputs.columns import InputColumns, canonical_schema
from chunkwise.inputs.parquet import check_ids, check_schema, open_input, plain_schema, read_groups
from chunkwise.inputs.scan import Scan, batch_file, carried_columns
from chunkwise.inputs.summary import (
    HISTORY_COLUMN,
    LINE_ERROR_COLUMN,
    OPTIONS_COLUMN,
    REASON_COLUMN,
    ROW_COLUMN,
    InputSummary,
)
from chunkwise.store.files import fsync_dir, write_json_atomic
from chunkwise.store.layout import RunPaths

if TYPE_CHECKING:
    import polars as pl

#: Rows per row group of requests.parquet. A chunk of ~111 requests then decodes at most 2 x 256
#: rows (about 1.4 MB of prompts at 2.8 KB each) instead of a whole input row group; smaller groups
#: only grow the footer (~0.1 KB per column per group).
STAGED_ROW_GROUP_ROWS = 256


@dataclass(frozen=True)
class StagedInput(InputSummary):
    fingerprint: str = ""  # sha256 hex of the input file's bytes
    run_dir: str = ""
    requests_path: str = ""
    rejects_path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "fingerprint": self.fingerprint, "requests_path": self.requests_path,
                "rejects_path": self.rejects_path}


def fingerprint(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """sha256 hex of the file's bytes, read in `block`-byte pieces (once per version of the file: a run
    names itself after it, then stages and checks it, in one process)."""
    st = os.stat(path)
    return _fingerprint(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, block)


@lru_cache(maxsize=16)
def _fingerprint(path: str, size: int, mtime_ns: int, inode: int, block: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            digest.update(data)
    return digest.hexdigest()


def _durable_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def staged_key(*, num_ctx: int, num_predict: int, run: dict[str, Any] | None,
               columns: InputColumns | None) -> dict[str, Any]:
    """What staging depends on besides the file's bytes (recorded in staged.json, compared before reuse)."""
    return {"num_ctx": num_ctx, "num_predict": num_predict, "run": run or {},
            "columns": (columns or InputColumns()).as_dict()}


def stage_input(path: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, num_ctx: int, num_predict: int,
                run: dict[str, Any] | None = None, columns: InputColumns | None = None,
                internal: bool = False) -> StagedInput:
    """Validate `path`, then write `run_dir/requests.parquet` and `run_dir/rejects.parquet`.

    Both files appear atomically (temp file, fsync, rename) and only after the whole input was
    read; on InputError nothing is left behind. `run_dir` is created if missing. `columns` maps the
    id and request columns and limits the rows (`chunkwise.inputs.columns`). An OpenAI batch file is
    first converted to a request table (`chunkwise.inputs.batchfile`; its lines are checked against `run`:
    the run's model) and staged from that (`internal`: a table chunkwise wrote, in the canonical shape).
    """
    path, run_dir = Path(path), Path(run_dir)
    key = staged_key(num_ctx=num_ctx, num_predict=num_predict, run=run, columns=columns)
    if batch_file(path):
        from chunkwise.inputs.batchfile import converted_copy

        run_dir.mkdir(parents=True, exist_ok=True)
        converted = converted_copy(path, run_dir, run=run, columns=columns)
        try:
            staged = stage_input(converted, run_dir, num_ctx=num_ctx, num_predict=num_predict, internal=True)
        finally:
            converted.unlink(missing_ok=True)
        digest = fingerprint(path)  # the user's file, as every resume compares it
        write_json_atomic(RunPaths(run_dir).staged, {"fingerprint": digest, **key})
        return dataclasses.replace(staged, path=str(path), fingerprint=digest)
    pf = open_input(path)
    input_schema, layout = check_schema(path, pf, None if internal else columns, internal=internal)
    schema = canonical_schema(plain_schema(input_schema), layout)
    id_dtype = str(check_ids(path, pf, layout).type)
    scan = Scan(layout.has_system or layout.chat, num_ctx, num_predict)
    carried = carried_columns(schema)
    digest = fingerprint(path)
    metadata = {k: v for k, v in (schema.metadata or {}).items() if k != b"pandas"} or None
    req_schema = pa.schema([pa.field(ROW_COLUMN, pa.int64()), *(f for f in schema if f.name != LINE_ERROR_COLUMN)],
                           metadata=metadata)
    rej_schema = pa.schema(
        [pa.field(ROW_COLUMN, pa.int64()), schema.field("id"), pa.field(REASON_COLUMN, pa.large_string()),
         *(schema.field(c) for c in carried)],
        metadata=metadata,
    )
    text_cols = {"prompt", "system", REASON_COLUMN, HISTORY_COLUMN, OPTIONS_COLUMN}
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(run_dir)
    req_tmp, rej_tmp = paths.temp(paths.requests.name), paths.temp(paths.rejects.name)

    def writer(tmp: Path, out: pa.Schema) -> pq.ParquetWriter:
        plain = [n for n in out.names if n not in text_cols]
        return pq.ParquetWriter(tmp, out, compression="zstd", use_dictionary=[n for n in plain if n != "id"],
                                write_statistics=plain)

    try:
        with writer(req_tmp, req_schema) as req_w, writer(rej_tmp, rej_schema) as rej_w:
            for table in read_groups(path, pf, input_schema.names, layout):
                rows, keep, reasons = scan.classify(table)
                accepted = table.filter(keep) if reasons else table
                accepted = accepted.add_column(0, ROW_COLUMN, rows.filter(keep) if reasons else rows)
                if accepted.num_rows:
                    req_w.write_table(accepted.select(req_schema.names).cast(req_schema),
                                      row_group_size=STAGED_ROW_GROUP_ROWS)
                if reasons:
                    bad = pc.invert(keep)
                    rej = table.filter(bad).select(["id", *carried])
                    rej = rej.add_column(0, ROW_COLUMN, rows.filter(bad))
                    rej = rej.add_column(2, REASON_COLUMN, pa.array(reasons, pa.large_string()))
                    rej_w.write_table(rej.cast(rej_schema), row_group_size=STAGED_ROW_GROUP_ROWS)
        _durable_replace(req_tmp, paths.requests)
        _durable_replace(rej_tmp, paths.rejects)
    finally:
        req_tmp.unlink(missing_ok=True)
        rej_tmp.unlink(missing_ok=True)
    # written last: what the staged files were made from (`chunkwise.inputs.staged`)
    write_json_atomic(paths.staged, {"fingerprint": digest, **key})
    summary = scan.summary(
        path, id_dtype, carried, cls=StagedInput, fingerprint=digest, run_dir=str(run_dir),
        requests_path=str(paths.requests), rejects_path=str(paths.rejects),
    )
    assert isinstance(summary, StagedInput)  # summary() built it with cls=StagedInput
    return summary


# --- chunk reads ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _staged_metadata(path: str, size: int, mtime_ns: int) -> tuple[pq.FileMetaData, tuple[int, ...]]:
    """Footer and row-group start positions of a staged file, parsed once per file version."""
    md = pq.read_metadata(path)
    starts, pos = [], 0
    for i in range(md.num_row_groups):
        starts.append(pos)
        pos += md.row_group(i).num_rows
    starts.append(pos)
    return md, tuple(starts)


def _read_row_groups(path: str, metadata: pq.FileMetaData, groups: list[int], columns: list[str]) -> pa.Table:
    """The one place chunk reads touch the file (tests count the row groups read here)."""
    return pq.ParquetFile(path, metadata=metadata).read_row_groups(groups, columns=columns, use_threads=False)


def read_requests(staged_path: str | os.PathLike[str], start: int, stop: int) -> pl.DataFrame:
    """Accepted requests at positions [start, stop) of requests.parquet as a polars DataFrame with
    columns `_row` (int64), `id`, `prompt` (str), `system` (str, null where the row has none), `_history`
    (a chat's earlier turns, null where none) and `_options` (a batch line's own options as JSON, null
    where none).

    Reads only the row groups overlapping [start, stop)."""
    import polars as pl

    table = _requests_table(staged_path, start, stop)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    missing = [c for c in ("system", OPTIONS_COLUMN) if c not in df.columns]
    df = df.with_columns(*[pl.lit(None, dtype=pl.String).alias(c) for c in missing])
    if HISTORY_COLUMN not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String})))
                             .alias(HISTORY_COLUMN))
    return df.with_columns(pl.col("prompt").cast(pl.String), pl.col("system").cast(pl.String),
                           pl.col(OPTIONS_COLUMN).cast(pl.String)).select(
        ROW_COLUMN, "id", "prompt", "system", HISTORY_COLUMN, OPTIONS_COLUMN
    )


def read_request_rows(staged_path: str | os.PathLike[str], start: int, stop: int) -> list[dict[str, Any]]:
    """`read_requests(...).to_dicts()` (one dict per request, the same keys and values) read with pyarrow
    alone: a run's first chunk does not wait for polars' import (0.3-0.6 s of CPU on a 2-core machine, on
    the path from `chunkwise run` to its first request)."""
    table = _requests_table(staged_path, start, stop)
    fill = {c: None for c in ("system", HISTORY_COLUMN, OPTIONS_COLUMN) if c not in table.column_names}
    return [{**row, **fill} for row in table.to_pylist()]


def _requests_table(staged_path: str | os.PathLike[str], start: int, stop: int) -> pa.Table:
    """The staged rows [start, stop) with the columns a chunk reads (those the file has)."""
    path = str(staged_path)
    st = os.stat(path)
    md, starts = _staged_metadata(path, st.st_size, st.st_mtime_ns)
    total = starts[-1]
    if not 0 <= start <= stop <= total:
        raise ValueError(f"{path}: positions [{start}, {stop}) are outside the {total} staged requests")
    names = md.schema.to_arrow_schema().names
    columns = [ROW_COLUMN, "id", "prompt"] + [c for c in ("system", HISTORY_COLUMN, OPTIONS_COLUMN) if c in names]
    if start == stop:
        table = md.schema.to_arrow_schema().empty_table().select(columns)
        first = start
    else:
        g0 = bisect.bisect_right(starts, start) - 1
        g1 = bisect.bisect_left(starts, stop)  # first group starting at or after stop
        table = _read_row_groups(path, md, list(range(g0, g1)), columns)
        first = starts[g0]
    return table.slice(start - first, stop - start)
