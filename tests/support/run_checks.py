"""Helpers for the exactly-once tests: comparing results, reading ledgers, settings from the
environment, and the state a run leaves in this process.

`COMPARED` are the columns that must be identical between an interrupted-and-resumed run and an
uninterrupted one (the simulator is deterministic); timings, attempts and chunk numbers may differ.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from chunkwise.settings import get_settings
from chunkwise.store.ledger import decode_line

COMPARED = ["id", "status", "response", "done_reason", "prompt_eval_count", "eval_count"]


def results(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(Path(run_dir) / "results.parquet")


def assert_same_results(run_dir: Path, expected: pl.DataFrame) -> pl.DataFrame:
    """results.parquet of `run_dir` equals `expected` on COMPARED, row for row, each id once."""
    got = results(run_dir)
    assert got["id"].is_unique().all(), "an id appears more than once in results.parquet"
    assert got.height == expected.height
    diff = got.select(COMPARED).with_row_index().join(
        expected.select(COMPARED).with_row_index(), on="index", suffix="_expected")
    for col in COMPARED:
        bad = diff.filter(pl.col(col).ne_missing(pl.col(f"{col}_expected")))
        assert bad.is_empty(), f"{col} differs in {bad.height} rows, first: {bad.head(1).to_dicts()}"
    return got


def assert_reconciles(results: pl.DataFrame, stats: dict[str, Any]) -> None:
    """stats.json's request and token totals are those of results.parquet's rows."""
    r = stats["requests"]
    assert r["reconciles"] and r["total"] == results.height
    assert r["succeeded"] == results.filter(pl.col("status") == "ok").height
    assert stats["tokens"]["generated"] == results["eval_count"].sum()
    assert stats["tokens"]["prompt_evaluated"] == results["prompt_eval_count"].sum()


def assert_answered_once(sim_stats: dict[str, Any], expected: int | None = None) -> None:
    """No request was answered twice by the simulator (and, if given, exactly `expected` were answered)."""
    assert sim_stats["max_answered_per_fingerprint"] == 1, (
        f"{sim_stats['fingerprints_answered_more_than_once']} requests were answered more than once")
    if expected is not None:
        assert sim_stats["answered_total"] == expected


def ledger_records(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Every valid ledger record of the run, and the number of torn or corrupt lines."""
    records, bad = [], 0
    for path in sorted((Path(run_dir) / "ledger").glob("chunk-*.jsonl")):
        for line in path.read_bytes().splitlines(keepends=True):
            record = decode_line(line)
            if record is None:
                bad += 1
            else:
                records.append(record)
    return records, bad


@contextmanager
def chunkwise_env(**values: Any) -> Iterator[None]:
    """Set CHUNKWISE_<NAME> variables for the block; settings are re-read on entry and exit."""
    names = {f"CHUNKWISE_{k.upper()}": str(v) for k, v in values.items()}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


@contextmanager
def saved_signal_handlers() -> Iterator[None]:
    """Restore SIGINT/SIGTERM handlers after an in-process `chunkwise run` installed its own."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
