"""The request file: validation and quarantine (staging and chunk reads: `chunkwise.inputs.stage`).

Input contract: a Parquet file with `id` (unique, string or integer), `prompt` (string) and an
optional `system` (string: the row's own system prompt; null means the run's). Every other column
is carried through untouched (binary columns included).

Three outcomes for a file:

- `InputError` (a ValueError, one line naming the file, the column or row, and what to do) when
  the file as a whole cannot be used: missing, a directory, not Parquet, no rows, `id`/`prompt`
  missing or of the wrong type, `system` of the wrong type, null or duplicate ids. Nothing is written.
- Quarantine of single rows, never a silent drop: a null, empty or whitespace-only prompt, or one
  that cannot fit the context at all (`estimate.min_plausible_tokens(chars) > num_ctx - num_predict`,
  i.e. too long even at 8 characters per token). Rejected rows keep their input row number, id and
  a reason.
- Accepted rows, which `chunkwise.inputs.stage.stage_input` writes into the run directory.

`validate_only` (for `chunkwise plan`) and `stage_input` run the same scan; it streams the file in
batches of `SCAN_BATCH_ROWS` rows, so a file of several hundred MB is never held in memory (not even
one row group of it), and `validate_only` reads only `id`, `prompt` and `system`.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from chunkwise.errors import InputError
from chunkwise.tokens import MAX_PLAUSIBLE_CHARS_PER_TOKEN, min_plausible_tokens

if TYPE_CHECKING:
    pass

REQUESTS_FILE, REJECTS_FILE = "requests.parquet", "rejects.parquet"
ROW_COLUMN, REASON_COLUMN = "_row", "_reason"
#: A converted OpenAI batch file's per-line quarantine reason (`chunkwise.inputs.batchfile`); null if good.
LINE_ERROR_COLUMN = "_line_error"
#: The scan reads the input this many rows at a time through a buffered stream of this many bytes,
#: not whole row groups: on the 170K sample (16K-row groups of 46 MB of prompts) this is both the
#: fastest (0.52 s for the prompt column vs 0.7-0.95 s reading whole groups on 2 threads) and the
#: smallest (peak RSS 96 MiB vs 400-500 MiB), and a file written as one huge row group costs the same.
SCAN_BATCH_ROWS = 1024
SCAN_BUFFER_BYTES = 1 << 20
FIRST_REJECTS_KEPT = 20
LONGEST_KEPT = 50
DUPLICATES_SHOWN = 5

REASON_NULL = "prompt is null: give the row a prompt or remove it from the input"
REASON_EMPTY = "prompt is empty: give the row a prompt or remove it from the input"


@dataclass(frozen=True)
class Reject:
    row: int  # input row number, counting from 0
    id: Any
    reason: str


@dataclass(frozen=True)
class LongRequest:
    row: int
    id: Any
    chars: int  # prompt characters plus the row's own system prompt, if any
    own_system: bool  # whether `chars` includes a row's own system prompt


@dataclass(frozen=True)
class InputSummary:
    """What planning needs to know about a validated input (no prompts)."""

    path: str
    rows: int
    accepted: int
    rejected: int
    id_dtype: str  # Arrow type name of `id`, e.g. "int64", "large_string"
    carried_columns: tuple[str, ...]
    has_system: bool
    num_ctx: int  # the limits the quarantine used
    num_predict: int
    first_rejects: tuple[Reject, ...]
    #: Accepted rows with the most characters, longest first (at most LONGEST_KEPT).
    longest: tuple[LongRequest, ...]
    #: Per accepted row, in order (int64): input row number, prompt characters, and the row's own
    #: system prompt characters (null where it has none; None when there is no `system` column).
    accepted_rows: pa.Array = field(repr=False, compare=False)
    prompt_chars: pa.Array = field(repr=False, compare=False)
    system_chars: pa.Array | None = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "rows": self.rows, "accepted": self.accepted, "rejected": self.rejected,
            "id_dtype": self.id_dtype, "carried_columns": list(self.carried_columns),
            "has_system": self.has_system, "num_ctx": self.num_ctx, "num_predict": self.num_predict,
            "first_rejects": [{"row": r.row, "id": r.id, "reason": r.reason} for r in self.first_rejects],
        }


# --- opening and whole-file checks ------------------------------------------------------------


def _open(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the input path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file; give the path of one Parquet file")
    try:
        return pq.ParquetFile(path)
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror}); check the file's permissions") from exc
    except (pa.ArrowException, OSError) as exc:
        raise _not_parquet(path, exc) from exc


def _not_parquet(path: Path, exc: BaseException) -> InputError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InputError(
        f"{path}: not a readable Parquet file ({detail}); write the requests with polars "
        "DataFrame.write_parquet or pyarrow.parquet.write_table"
    )


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    text = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    return bool(text or pa.types.is_null(t))


def _check_schema(path: Path, pf: pq.ParquetFile) -> tuple[pa.Schema, bool]:
    if pf.metadata.num_rows == 0:
        raise InputError(f"{path}: has no rows; write at least one request (columns `id` and `prompt`)")
    schema = pf.schema_arrow
    names = schema.names
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if "id" not in names:
        raise InputError(f"{path}: no `id` column (columns: {shown}); add a unique string or integer `id` column")
    if "prompt" not in names:
        raise InputError(
            f"{path}: no `prompt` column (columns: {shown}); add a string `prompt` column or rename the "
            "column holding the prompts to `prompt`"
        )
    if ROW_COLUMN in names:
        raise InputError(f"{path}: has a column named `{ROW_COLUMN}`, which chunkwise adds; rename or drop it")
    id_type = schema.field("id").type
    value_type = id_type.value_type if pa.types.is_dictionary(id_type) else id_type
    if not (pa.types.is_integer(value_type) or (_is_text(value_type) and not pa.types.is_null(value_type))):
        raise InputError(
            f"{path}: column `id` has type {id_type}; ids must be strings or integers: cast it "
            "(to int64 if every value is a whole number, else to string)"
        )
    prompt_type = schema.field("prompt").type
    if not _is_text(prompt_type):
        raise InputError(f"{path}: column `prompt` has type {prompt_type}; prompts must be strings: cast it to string")
    has_system = "system" in names
    if has_system and not _is_text(schema.field("system").type):
        raise InputError(
            f"{path}: column `system` has type {schema.field('system').type}; `system` must be strings "
            "(a row's own system prompt, null for the run's): cast it to string or drop the column"
        )
    return schema, has_system


def _plain_type(t: pa.DataType) -> pa.DataType:
    """View types have no filter kernel in pyarrow: they are read as the equivalent large type."""
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    return t


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(_plain_type(f.type)) for f in schema], metadata=schema.metadata)


def _text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Plain (large) strings, whatever text encoding the file used."""
    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return column
    return pc.cast(column, pa.large_string())


def _id_values(column: pa.ChunkedArray) -> pa.Array:
    arr = column.combine_chunks()
    arr = arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr
    return arr.cast(_plain_type(arr.type))


def _check_ids(path: Path, pf: pq.ParquetFile) -> pa.Array:
    """All ids (decoded, one array: small next to the prompts), after checking nulls and duplicates."""
    try:
        ids = _id_values(pf.read(columns=["id"]).column("id"))
    except (pa.ArrowException, OSError) as exc:
        raise _not_parquet(path, exc) from exc
    if ids.null_count:
        first = pc.indices_nonzero(pc.is_null(ids))[0].as_py()
        raise InputError(
            f"{path}: column `id` is null in {ids.null_count} rows (first at row {first}, counting from 0); "
            "give every row a unique id"
        )
    counts = pc.value_counts(ids)
    dup = pc.greater(counts.field("counts"), 1)
    n_dup = pc.sum(dup).as_py() or 0
    if n_dup:
        values = counts.field("values").filter(dup)
        times = counts.field("counts").filter(dup)
        shown = ", ".join(f"{values[i].as_py()!r} x{times[i].as_py()}" for i in range(min(n_dup, DUPLICATES_SHOWN)))
        more = ", ..." if n_dup > DUPLICATES_SHOWN else ""
        raise InputError(
            f"{path}: column `id` has {n_dup} duplicated values in {pc.sum(times).as_py()} rows "
            f"({shown}{more}); ids must be unique: deduplicate the rows or renumber the ids"
        )
    return ids


# --- the scan ---------------------------------------------------------------------------------


def _groups(path: Path, pf: pq.ParquetFile, columns: list[str]) -> Iterator[pa.Table]:
    """The file's rows in order, `SCAN_BATCH_ROWS` at a time, view types read as large types."""
    plain = _plain_schema(pa.schema([pf.schema_arrow.field(c) for c in columns]))
    streamed = pq.ParquetFile(path, metadata=pf.metadata, buffer_size=SCAN_BUFFER_BYTES, pre_buffer=False)
    for batch in streamed.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=columns, use_threads=False):
        table = pa.Table.from_batches([batch])
        yield table if table.schema.equals(plain) else table.cast(plain)


def _read_groups(path: Path, pf: pq.ParquetFile, columns: list[str]) -> Iterator[pa.Table]:
    """`_groups`, with a read failure (a corrupt page, a truncated file) as an InputError."""
    groups = _groups(path, pf, columns)
    while True:
        try:
            table = next(groups)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise _not_parquet(path, exc) from exc
        yield table


class _Scan:
    """Classifies rows batch by batch and accumulates what InputSummary holds."""

    def __init__(self, has_system: bool, num_ctx: int, num_predict: int) -> None:
        limit = num_ctx - num_predict
        if limit <= 0:
            raise ValueError(f"num_predict {num_predict} leaves no room in num_ctx {num_ctx}; lower num_predict")
        # Most characters that can still fit: the boundary of min_plausible_tokens(chars) <= limit.
        max_chars = int((limit + 1) * MAX_PLAUSIBLE_CHARS_PER_TOKEN)
        while min_plausible_tokens(max_chars) > limit:
            max_chars -= 1
        while min_plausible_tokens(max_chars + 1) <= limit:
            max_chars += 1
        self.max_chars, self.num_ctx, self.num_predict = max_chars, num_ctx, num_predict
        self.has_system = has_system
        self.rows = self.rejected = 0
        self.first_rejects: list[Reject] = []
        self.longest: list[tuple[int, int, Any, bool]] = []  # min-heap of (chars, -row, id, own system)
        self.accepted_rows: list[pa.Array] = []
        self.prompt_chars: list[pa.Array] = []
        self.system_chars: list[pa.Array] = []

    def _too_long(self, chars: int, with_system: bool) -> str:
        what = "prompt plus the row's system prompt is" if with_system else "prompt is"
        limit = self.num_ctx - self.num_predict
        return (
            f"{what} {chars} characters, at least {min_plausible_tokens(chars)} tokens even at "
            f"{MAX_PLAUSIBLE_CHARS_PER_TOKEN:g} characters per token, more than num_ctx {self.num_ctx} - "
            f"num_predict {self.num_predict} = {limit}: shorten or split the prompt, or raise num_ctx"
        )

    def classify(self, table: pa.Table, ids: pa.Array | None = None) -> tuple[pa.Array, pa.Array, list[str]]:
        """Classify the next rows (`table` has `prompt`, `system` if any, and `id` unless `ids` is
        given). Returns (row numbers, keep mask, reasons of the rejected rows in order)."""
        n = table.num_rows
        ids = _id_values(table.column("id")) if ids is None else ids
        rows = pa.array(range(self.rows, self.rows + n), pa.int64())
        self.rows += n
        prompt = _text(table.column("prompt").combine_chunks())
        chars = pc.cast(pc.utf8_length(prompt), pa.int64())
        system_chars = None
        total = chars
        if self.has_system:
            system_chars = pc.cast(pc.utf8_length(_text(table.column("system").combine_chunks())), pa.int64())
            total = pc.add(chars, pc.fill_null(system_chars, 0))
        bad = pc.or_kleene(pc.is_null(prompt), pc.less_equal(chars, 0))
        bad = pc.or_(pc.fill_null(bad, True), pc.fill_null(pc.utf8_is_space(prompt), False))
        bad = pc.or_(bad, pc.fill_null(pc.greater(total, self.max_chars), False))
        has_line_error = LINE_ERROR_COLUMN in table.column_names
        line_error = table.column(LINE_ERROR_COLUMN).combine_chunks() if has_line_error else None
        if line_error is not None:
            bad = pc.or_(bad, pc.is_valid(line_error))
        keep = pc.invert(bad)
        reasons: list[str] = []
        for i in pc.indices_nonzero(bad).to_pylist():
            c = chars[i].as_py()
            if line_error is not None and line_error[i].is_valid:
                reason = line_error[i].as_py()
            elif c is None:
                reason = REASON_NULL
            elif c == 0:
                reason = REASON_EMPTY
            elif total[i].as_py() > self.max_chars:
                reason = self._too_long(total[i].as_py(), system_chars is not None and system_chars[i].is_valid)
            else:
                reason = (f"prompt is only whitespace ({c} characters): give the row a prompt or remove it "
                          "from the input")
            reasons.append(reason)
            if len(self.first_rejects) < FIRST_REJECTS_KEPT:
                self.first_rejects.append(Reject(rows[i].as_py(), ids[i].as_py(), reason))
        self.rejected += len(reasons)
        self.accepted_rows.append(rows.filter(keep))
        self.prompt_chars.append(chars.filter(keep))
        if system_chars is not None:
            self.system_chars.append(system_chars.filter(keep))
        kept_total = total.filter(keep)
        if len(self.longest) >= LONGEST_KEPT:  # only rows that can enter the top list
            candidates = pc.indices_nonzero(pc.greater_equal(kept_total, self.longest[0][0]))
        else:
            candidates = pc.indices_nonzero(pc.greater_equal(kept_total, 0))
        if len(candidates):
            top = candidates.take(pc.select_k_unstable(kept_total.take(candidates),
                                                       k=min(LONGEST_KEPT, len(candidates)),
                                                       sort_keys=[("dummy", "descending")]))
            kept_ids, kept_rows = ids.filter(keep), rows.filter(keep)
            kept_system = system_chars.filter(keep) if system_chars is not None else None
            for j in top.to_pylist():
                own = kept_system is not None and kept_system[j].is_valid
                item = (kept_total[j].as_py(), -kept_rows[j].as_py(), kept_ids[j].as_py(), own)
                if len(self.longest) < LONGEST_KEPT:
                    heapq.heappush(self.longest, item)
                elif item[:2] > self.longest[0][:2]:
                    heapq.heapreplace(self.longest, item)
        return rows, keep, reasons

    def summary(
        self, path: Path, id_dtype: str, carried: tuple[str, ...], cls: type[InputSummary] = InputSummary, **extra: Any
    ) -> InputSummary:
        def cat(arrays: list[pa.Array]) -> pa.Array:
            return pa.concat_arrays(arrays) if arrays else pa.array([], pa.int64())

        longest = sorted(self.longest, key=lambda t: (-t[0], -t[1]))
        return cls(
            path=str(path), rows=self.rows, accepted=self.rows - self.rejected, rejected=self.rejected,
            id_dtype=id_dtype, carried_columns=carried, has_system=self.has_system, num_ctx=self.num_ctx,
            num_predict=self.num_predict, first_rejects=tuple(self.first_rejects),
            longest=tuple(LongRequest(-r, i, c, own) for c, r, i, own in longest),
            accepted_rows=cat(self.accepted_rows), prompt_chars=cat(self.prompt_chars),
            system_chars=cat(self.system_chars) if self.has_system else None, **extra,
        )


def _carried(schema: pa.Schema) -> tuple[str, ...]:
    return tuple(n for n in schema.names if n not in ("id", "prompt", "system", LINE_ERROR_COLUMN))


def batch_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an OpenAI batch file (`.jsonl`, read by `chunkwise.inputs.batchfile`)."""
    return Path(path).suffix.lower() == ".jsonl"


def validate_only(path: str | os.PathLike[str], *, num_ctx: int, num_predict: int,
                  run: dict[str, Any] | None = None) -> InputSummary:
    """Validate and classify every row without writing anything (reads `id`, `prompt`, `system`).
    `run` (model and options) is what a batch file's lines are checked against."""
    path = Path(path)
    if batch_file(path):
        from chunkwise.inputs.batchfile import validate_batch

        return validate_batch(path, num_ctx=num_ctx, num_predict=num_predict, run=run)
    pf = _open(path)
    schema, has_system = _check_schema(path, pf)
    ids = _check_ids(path, pf)
    scan = _Scan(has_system, num_ctx, num_predict)
    columns = ["prompt"] + (["system"] if has_system else [])
    for table in _read_groups(path, pf, columns):
        scan.classify(table, ids.slice(scan.rows, table.num_rows))
    return scan.summary(path, str(ids.type), _carried(schema))
