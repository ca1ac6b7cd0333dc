"""Chunk checkpoints are atomic and self-verifying."""

from chunkwise.store.checkpoint import load_checkpoint, write_checkpoint
from chunkwise.store.records import outcome


def _records():
    return [outcome(_row=5, status="ok", response="five", chunk=0, attempts=1),
            outcome(_row=3, status="failed", error_class="transient", error_message="x", chunk=0, attempts=6)]


def test_round_trip_sorted_by_row(tmp_path):
    path = tmp_path / "chunks" / "chunk-00000.parquet"
    digest = write_checkpoint(path, _records())
    loaded = load_checkpoint(path)
    assert loaded is not None
    records, got = loaded
    assert got == digest
    assert [r["_row"] for r in records] == [3, 5]
    assert records[1]["response"] == "five"
    assert not list(path.parent.glob(".*.tmp"))  # no temp file left behind


def test_missing_torn_or_tampered_checkpoint_is_not_trusted(tmp_path):
    path = tmp_path / "c.parquet"
    assert load_checkpoint(path) is None
    write_checkpoint(path, _records())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert load_checkpoint(path) is None

    import pyarrow.parquet as pq

    write_checkpoint(path, _records())
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[0]["response"] = "tampered"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)  # keeps the old digest
    assert load_checkpoint(path) is None
