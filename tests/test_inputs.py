"""Input validation, quarantine, staging and chunk reads (chunkwise.inputs: scan, parquet, stage)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chunkwise.errors import InputError
from chunkwise.inputs import parquet
from chunkwise.inputs import stage as staging
from chunkwise.inputs.scan import validate_only
from chunkwise.inputs.stage import read_request_rows, read_requests, stage_input
from chunkwise.inputs.staged import load_staged
from chunkwise.inputs.summary import REASON_NULL

LIMITS = {"num_ctx": 1000, "num_predict": 100}  # at most 7207 characters fit (7208 // 8 = 901 > 900)
NOT_PARQUET_TAIL = "); write the requests with polars DataFrame.write_parquet or pyarrow.parquet.write_table"


def write(path: Path, columns: dict, **kwargs) -> Path:
    pq.write_table(pa.table(columns), path, **kwargs)
    return path


def error_of(path: Path, **limits) -> str:
    with pytest.raises(InputError) as info:
        validate_only(path, **(limits or LIMITS))
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, ValueError)
    return message


# --- whole-file errors: exact messages ----------------------------------------------------------


def test_missing_file(tmp_path):
    p = tmp_path / "nope.parquet"
    assert error_of(p) == f"{p}: no such file; check the input path"


def test_directory(tmp_path):
    assert error_of(tmp_path) == f"{tmp_path}: is a directory, not a file; give the path of one Parquet file"


@pytest.mark.parametrize("content", [b"id,prompt\n1,hello\n", b""])
def test_not_parquet(tmp_path, content):
    p = tmp_path / "requests.csv"
    p.write_bytes(content)
    message = error_of(p)
    assert message.startswith(f"{p}: not a readable Parquet file (")
    assert message.endswith(NOT_PARQUET_TAIL)


def test_corrupt_data_page(tmp_path):
    p = write(tmp_path / "c.parquet", {"id": list(range(5000)), "prompt": [f"hello {i} " * 5 for i in range(5000)]},
              compression="zstd")
    data = bytearray(p.read_bytes())
    data[len(data) // 4 : len(data) // 2] = bytes(len(data) // 2 - len(data) // 4)  # footer intact
    p.write_bytes(bytes(data))
    message = error_of(p)
    assert message.startswith(f"{p}: not a readable Parquet file (") and message.endswith(NOT_PARQUET_TAIL)
    with pytest.raises(InputError):
        stage_input(p, tmp_path / "run", **LIMITS)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # temp files removed


def test_no_rows(tmp_path):
    p = write(tmp_path / "e.parquet", {"id": pa.array([], pa.string()), "prompt": pa.array([], pa.string())})
    assert error_of(p) == f"{p}: has no rows; write at least one request (columns `id` and `prompt`)"


def test_missing_id(tmp_path):
    p = write(tmp_path / "x.parquet", {"key": [1], "prompt": ["hi"]})
    assert error_of(p) == (
        f"{p}: no `id` column (columns: key, prompt); add a unique string or integer `id` column, or name the id "
        "column with --id-column"
    )


def test_missing_prompt(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": [1], "text": ["hi"]})
    assert error_of(p) == (
        f"{p}: no `prompt` column (columns: id, text); add a string `prompt` column (or a `messages` column of "
        "chats), or name the column holding the requests with --prompt-column"
    )


@pytest.mark.parametrize(("values", "dtype"), [([1, 2], "int64"), ([b"a", b"b"], "binary")])
def test_prompt_wrong_type(tmp_path, values, dtype):
    p = write(tmp_path / "x.parquet", {"id": [1, 2], "prompt": values})
    assert error_of(p) == (f"{p}: column `prompt` has type {dtype}; requests must be strings (prompts) or lists of "
                           "{role: string, content: string} (chats): cast it")


@pytest.mark.parametrize(("values", "dtype"), [([1.0, 2.0], "double"), ([[1], [2]], "list<element: int64>")])
def test_id_wrong_type(tmp_path, values, dtype):
    p = write(tmp_path / "x.parquet", {"id": values, "prompt": ["a", "b"]})
    assert error_of(p) == (
        f"{p}: column `id` has type {dtype}; ids must be strings or integers: cast it "
        "(to int64 if every value is a whole number, else to string)"
    )


def test_system_wrong_type(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": [1], "prompt": ["a"], "system": [3]})
    assert error_of(p) == (
        f"{p}: column `system` has type int64; `system` must be strings (a row's own system prompt, null for "
        "the run's): cast it to string or drop the column"
    )


def test_duplicate_ids_show_first_values_and_counts(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": ["a", "b", "a", "c", "b", "a"], "prompt": ["p"] * 6})
    assert error_of(p) == (
        f"{p}: column `id` has 2 duplicated values in 5 rows ('a' x3, 'b' x2); ids must be unique: "
        "deduplicate the rows or renumber the ids"
    )


def test_many_duplicate_integer_ids_are_elided(tmp_path):
    ids = [1, 2, 3, 4, 5, 6, 7] * 2
    p = write(tmp_path / "x.parquet", {"id": ids, "prompt": ["p"] * 14})
    assert error_of(p) == (
        f"{p}: column `id` has 7 duplicated values in 14 rows (1 x2, 2 x2, 3 x2, 4 x2, 5 x2, ...); ids must be "
        "unique: deduplicate the rows or renumber the ids"
    )


def test_null_ids(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": ["a", None, "c", None], "prompt": ["p"] * 4})
    assert error_of(p) == (
        f"{p}: column `id` is null in 2 rows (first at row 1, counting from 0); give every row a unique id"
    )


def test_reserved_row_column(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": [1], "prompt": ["a"], "_row": [0]})
    assert error_of(p) == f"{p}: has a column named `_row`, which chunkwise adds; rename or drop it"


def test_num_predict_must_leave_room(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": [1], "prompt": ["a"]})
    with pytest.raises(ValueError, match="num_predict 1000 leaves no room in num_ctx 1000"):
        validate_only(p, num_ctx=1000, num_predict=1000)


def test_nothing_written_on_input_error(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": [1, 1], "prompt": ["a", "b"]})
    with pytest.raises(InputError):
        stage_input(p, tmp_path / "run", **LIMITS)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# --- quarantine ------------------------------------------------------------------------------


def test_quarantine_reasons_and_boundary(tmp_path):
    prompts = ["fine", None, "", " \n\t ", "x" * 7207, "y" * 7208, "z" * 7200, "ok"]
    systems = [None, None, None, None, None, None, "s" * 8, "own"]
    p = write(tmp_path / "x.parquet", {"id": [f"r{i}" for i in range(8)], "prompt": prompts, "system": systems})
    summary = validate_only(p, **LIMITS)
    assert (summary.rows, summary.accepted, summary.rejected) == (8, 3, 5)
    assert [(r.row, r.id, r.reason) for r in summary.first_rejects] == [
        (1, "r1", "prompt is null: give the row a prompt or remove it from the input"),
        (2, "r2", "prompt is empty: give the row a prompt or remove it from the input"),
        (3, "r3", "prompt is only whitespace (4 characters): give the row a prompt or remove it from the input"),
        (5, "r5", "prompt is 7208 characters, at least 901 tokens even at 8 characters per token, more than "
                  "num_ctx 1000 - num_predict 100 = 900: shorten or split the prompt, or raise num_ctx"),
        (6, "r6", "prompt plus the row's system prompt is 7208 characters, at least 901 tokens even at 8 "
                  "characters per token, more than num_ctx 1000 - num_predict 100 = 900: shorten or split the "
                  "prompt, or raise num_ctx"),
    ]
    assert summary.accepted_rows.to_pylist() == [0, 4, 7]
    assert summary.prompt_chars.to_pylist() == [4, 7207, 2]
    assert summary.system_chars.to_pylist() == [None, None, 3]
    assert [(r.row, r.chars, r.own_system) for r in summary.longest] == [(4, 7207, False), (7, 5, True), (0, 4, False)]


def test_ten_megabyte_prompt_is_quarantined(tmp_path):
    p = write(tmp_path / "x.parquet", {"id": [1, 2], "prompt": ["short", "w" * 10_000_000]})
    summary = validate_only(p, num_ctx=128_000, num_predict=512)
    assert summary.accepted == 1
    assert summary.first_rejects[0].reason.startswith("prompt is 10000000 characters, at least 1250000 tokens")


# --- staging ---------------------------------------------------------------------------------


def mixed_table(n: int = 1000) -> pa.Table:
    prompts = [f"prompt {i} " + "word " * (i % 7) for i in range(n)]
    for i in range(0, n, 97):
        prompts[i] = None
    for i in range(5, n, 211):
        prompts[i] = "   "
    return pa.table({
        "id": pa.array(range(10_000, 10_000 + n), pa.int64()),
        "category": [f"c{i % 3}" for i in range(n)],
        "prompt": prompts,
        "blob": [bytes([0xFF, 0xFE, i % 256, 0x00]) for i in range(n)],
        "system": [None if i % 2 else f"sys {i}" for i in range(n)],
        "score": [i / 3 for i in range(n)],
        "tags": [[i, i + 1] for i in range(n)],
    })


@pytest.mark.parametrize("row_group_size", [1000, 128])  # one input row group / many
def test_stage_round_trip(tmp_path, monkeypatch, row_group_size):
    monkeypatch.setattr(parquet, "SCAN_BATCH_ROWS", 300)  # batches that straddle row groups
    table = mixed_table()
    src = tmp_path / "in.parquet"
    pq.write_table(table, src, row_group_size=row_group_size)
    staged = stage_input(src, tmp_path / "run", **LIMITS)

    bad = {i for i, p in enumerate(table["prompt"].to_pylist()) if p is None or not p.strip()}
    good = [i for i in range(len(table)) if i not in bad]
    assert (staged.rows, staged.accepted, staged.rejected) == (1000, len(good), len(bad))
    assert staged.fingerprint == hashlib.sha256(src.read_bytes()).hexdigest()
    assert staged.id_dtype == "int64" and staged.has_system
    assert staged.carried_columns == ("category", "blob", "score", "tags")
    written = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert written == ["rejects.parquet", "requests.parquet", "staged.json"]

    req = pq.read_table(staged.requests_path)
    assert req.column_names == ["_row", *table.column_names]
    assert req["_row"].to_pylist() == good
    assert req.drop_columns(["_row"]).equals(table.take(good))  # binary and nested columns byte-identical
    md = pq.read_metadata(staged.requests_path)
    assert max(md.row_group(i).num_rows for i in range(md.num_row_groups)) <= staging.STAGED_ROW_GROUP_ROWS

    rej = pq.read_table(staged.rejects_path)
    assert rej.column_names == ["_row", "id", "_reason", "category", "blob", "score", "tags"]
    assert rej["_row"].to_pylist() == sorted(bad)
    assert rej["blob"].to_pylist() == table["blob"].take(sorted(bad)).to_pylist()
    assert set(rej["_reason"].to_pylist()) == {
        REASON_NULL,
        "prompt is only whitespace (3 characters): give the row a prompt or remove it from the input",
    }

    checked = validate_only(src, **LIMITS)  # same scan, nothing written
    assert (checked.accepted, checked.first_rejects, checked.longest) == (
        staged.accepted, staged.first_rejects, staged.longest)
    assert checked.prompt_chars.equals(staged.prompt_chars)


def test_stage_string_ids_and_view_types(tmp_path):
    src = write(tmp_path / "v.parquet", {"id": pa.array(["x", "y"], pa.string_view()),
                                         "prompt": pa.array(["hello", None], pa.string_view())})
    staged = stage_input(src, tmp_path / "run", **LIMITS)
    assert (staged.accepted, staged.id_dtype) == (1, "large_string")
    assert read_requests(staged.requests_path, 0, 1).rows() == [(0, "x", "hello", None, None, None)]


def test_stage_categorical_prompt_from_polars(tmp_path):
    src = tmp_path / "c.parquet"
    frame = pl.DataFrame({"id": [1, 2], "prompt": ["a", "b"]})
    frame.with_columns(pl.col("prompt").cast(pl.Categorical)).write_parquet(src)
    staged = stage_input(src, tmp_path / "run", **LIMITS)
    assert read_requests(staged.requests_path, 0, 2)["prompt"].to_list() == ["a", "b"]


# --- chunk reads -----------------------------------------------------------------------------


@pytest.fixture()
def staged(tmp_path):
    n = 1000
    src = write(tmp_path / "in.parquet", {"id": [f"id-{i}" for i in range(n)],
                                          "prompt": [None if i == 3 else f"p{i}" for i in range(n)],
                                          "extra": list(range(n))})
    return stage_input(src, tmp_path / "run", **LIMITS)


@pytest.mark.parametrize(("start", "stop"), [(0, 0), (0, 1), (255, 257), (256, 512), (100, 999), (998, 999), (0, 999)])
def test_read_requests_boundaries(staged, start, stop):
    df = read_requests(staged.requests_path, start, stop)
    assert df.columns == ["_row", "id", "prompt", "system", "_history", "_options"]
    assert df.schema["system"] == pl.String
    rows = [r for r in range(1000) if r != 3][start:stop]
    assert df["_row"].to_list() == rows
    assert df["id"].to_list() == [f"id-{r}" for r in rows]
    assert df["prompt"].to_list() == [f"p{r}" for r in rows]
    assert df["system"].null_count() == len(rows)


@pytest.mark.parametrize(("start", "stop"), [(0, 0), (255, 257), (0, 999)])
def test_a_chunk_reads_its_rows_as_read_requests_gives_them_without_polars(staged, start, stop):
    assert read_request_rows(staged.requests_path, start, stop) == read_requests(
        staged.requests_path, start, stop).to_dicts()


def test_read_requests_reads_only_needed_row_groups(staged, monkeypatch):
    seen: list[list[int]] = []
    real = staging._read_row_groups

    def spy(path, metadata, groups, columns):
        seen.append(list(groups))
        return real(path, metadata, groups, columns)

    monkeypatch.setattr(staging, "_read_row_groups", spy)
    read_requests(staged.requests_path, 300, 411)
    read_requests(staged.requests_path, 250, 260)
    read_requests(staged.requests_path, 998, 999)
    assert seen == [[1], [0, 1], [3]]


def test_read_requests_out_of_range(staged):
    with pytest.raises(ValueError, match=r"positions \[10, 1000\) are outside the 999 staged requests"):
        read_requests(staged.requests_path, 10, 1000)


def test_load_staged_rebuilds_what_staging_returned(tmp_path):
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "prompt": ["a b c", None, "ü" * 9, "x"],
                             "system": [None, None, "own", ""], "extra": [b"\xff", b"", None, b"z"]}), source)
    run_dir = tmp_path / "run"
    staged = stage_input(source, run_dir, num_ctx=4096, num_predict=64)
    loaded = load_staged(run_dir, source=str(source), fingerprint=staged.fingerprint, num_ctx=4096,
                                 num_predict=64)
    for field in ("rows", "accepted", "rejected", "id_dtype", "carried_columns", "has_system", "first_rejects",
                  "fingerprint"):
        assert getattr(loaded, field) == getattr(staged, field), field
    for array in ("accepted_rows", "prompt_chars", "system_chars"):
        assert getattr(loaded, array).to_pylist() == getattr(staged, array).to_pylist(), array
