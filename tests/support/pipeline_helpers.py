"""Helpers for pipeline tests: small request files and a RunParams pointed at a simulator."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from chunkwise.params import RunParams


def write_requests(path: Path, n: int, *, prompt_words: int = 40, **extra_columns) -> Path:
    """`n` unique requests with ids `r0000`.. and a carried `group` column."""
    rows = {
        "id": [f"r{i:04d}" for i in range(n)],
        "prompt": [
            f"Request {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(prompt_words)) for i in range(n)
        ],
        "group": [i % 3 for i in range(n)],
        **extra_columns,
    }
    pl.DataFrame(rows).write_parquet(path, row_group_size=64)
    return path


def params_for(sim, input_path: Path, out: Path, **changes) -> RunParams:
    """The pipeline tests' run: conversation mode (what they were written for) unless a test says otherwise."""
    values = dict(input_path=str(input_path), host=sim.url, output_dir=str(out), run_name="t", num_ctx=8192,
                  parallel=2, chunk_size=10, system_prompt="You are terse.", num_predict=512, mode="conversation")
    values.update(changes)
    return RunParams(**values)
