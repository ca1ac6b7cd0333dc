"""Checkpoint digests: the orjson digest equals the stdlib one for ordinary records, and a
checkpoint written with the stdlib digest (older chunkwise) still verifies; a changed record does not."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from chunkwise.store.checkpoint import DIGEST_KEY, legacy_digest, load_checkpoint, records_digest, write_checkpoint
from chunkwise.store.records import OUTCOME_SCHEMA, outcome


def records() -> list[dict]:
    return [outcome(_row=i, chunk=0, attempts=1, status="ok", response=f"answer ünï \u2028 \t {i}", temperature=0.4,
                    prompt_eval_count=12, eval_count=3, latency_ns=10**12) for i in range(3)]


def test_orjson_digest_is_the_stdlib_digest_for_ordinary_records():
    rows = sorted(records(), key=lambda r: r["_row"])
    assert records_digest(rows) == legacy_digest(rows)


def test_a_checkpoint_with_the_older_digest_still_verifies_and_a_changed_one_does_not(tmp_path):
    path = tmp_path / "chunk-00000.parquet"
    rows = [{**r, "temperature": 1e-7} for r in records()]  # a float the two encoders spell differently
    assert records_digest(rows) != legacy_digest(rows)
    table = pa.Table.from_pylist(rows, schema=OUTCOME_SCHEMA)
    pq.write_table(table.replace_schema_metadata({DIGEST_KEY: legacy_digest(rows).encode()}), path)
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded[0] == rows
    rows[1]["response"] = "changed"
    table = pa.Table.from_pylist(rows, schema=OUTCOME_SCHEMA)
    pq.write_table(table.replace_schema_metadata({DIGEST_KEY: loaded[1].encode()}), path)
    assert load_checkpoint(path) is None
    digest = write_checkpoint(path, rows)
    assert load_checkpoint(path) == (rows, digest)
