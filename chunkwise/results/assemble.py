"""Assembling `results.parquet`: one row per input request, in input order.

Accepted requests take their outcome from the chunk checkpoints; quarantined rows appear with
status `rejected` and the reason as their error message, so `total = succeeded + failed + rejected`
holds row for row. The work is a streaming Polars query: prompts are never loaded, and answers
are read once.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from chunkwise.inputs.summary import REASON_COLUMN, REQUEST_COLUMNS, ROW_COLUMN
from chunkwise.store.files import write_atomic
from chunkwise.store.layout import RunPaths
from chunkwise.store.records import OUTCOME_FIELDS, Status

#: Staged columns that are not carried into the results (the request is the input, not the output: join
#: results.parquet to the input on `id` to see the prompt beside its answer).
NOT_CARRIED = (ROW_COLUMN, *REQUEST_COLUMNS)


def carried_columns(paths: RunPaths) -> list[str]:
    return [c for c in pl.scan_parquet(paths.requests).collect_schema().names() if c not in NOT_CARRIED]


def assemble_results(paths: RunPaths, checkpoints: list[Path]) -> Path:
    """Write results.parquet atomically from the staged input, rejects and checkpoints."""
    carried = carried_columns(paths)
    accepted = pl.scan_parquet(paths.requests).select("_row", "id", *carried)
    base = accepted.with_columns(pl.lit(None, dtype=pl.String).alias("_reason"))
    if paths.rejects.exists():
        rejects = pl.scan_parquet(paths.rejects)
        reject_cols = rejects.collect_schema().names()
        # ids of rejected rows may have been read with another dtype (e.g. all-null column); align
        id_dtype = accepted.collect_schema()["id"]
        rejected = rejects.select(
            "_row",
            pl.col("id").cast(id_dtype),
            *[pl.col(c) if c in reject_cols else pl.lit(None).alias(c) for c in carried],
            pl.col(REASON_COLUMN).cast(pl.String).alias("_reason"),
        )
        base = pl.concat([base, rejected], how="vertical_relaxed")
    outcomes = pl.scan_parquet(checkpoints) if checkpoints else None
    if outcomes is None:
        joined = base.with_columns(*[pl.lit(None).alias(c) for c in OUTCOME_FIELDS if c != "_row"])
    else:
        joined = base.join(outcomes, on="_row", how="left")
    results = (
        joined.with_columns(
            pl.when(pl.col("_reason").is_not_null()).then(pl.lit(str(Status.REJECTED)))
            .otherwise(pl.col("status")).alias("status"),
            pl.when(pl.col("_reason").is_not_null()).then(pl.lit("rejected"))
            .otherwise(pl.col("error_class")).alias("error_class"),
            pl.coalesce(pl.col("_reason"), pl.col("error_message")).alias("error_message"),
        )
        .sort("_row")
        .rename({"_row": "input_row"})
        .select("input_row", "id", *carried, *[c for c in OUTCOME_FIELDS if c != "_row"])
    )
    write_atomic(paths.results, lambda handle: results.sink_parquet(handle, compression="zstd"))
    return paths.results


def conversation_starts(paths: RunPaths, checkpoints: list[Path], run_system_prompt: str) -> int:
    """How many conversations conversation mode started: one per chunk, plus one wherever a row's
    own system prompt differs from the row before it in the same chunk."""
    requests = pl.scan_parquet(paths.requests)
    own = pl.col("system") if "system" in requests.collect_schema().names() else pl.lit(None, dtype=pl.String)
    effective = pl.when(own.str.len_chars() > 0).then(own).otherwise(pl.lit(run_system_prompt))
    starts = (
        requests.select("_row", effective.alias("sys"))
        .join(pl.scan_parquet(checkpoints).select("_row", "chunk"), on="_row")
        .sort("_row")
        .select((pl.col("sys") != pl.col("sys").shift(1).over("chunk")).fill_null(True).sum())
        .collect()
        .item()
    )
    return int(starts or 0)
