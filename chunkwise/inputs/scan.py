"""The request file: validation and quarantine, row by row (opening and whole-file checks:
`chunkwise.inputs.parquet`; what the scan finds: `chunkwise.inputs.summary`; staging and chunk reads:
`chunkwise.inputs.stage`).

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
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from chunkwise.inputs.columns import InputColumns, canonical_schema, history_chars
from chunkwise.inputs.parquet import as_text, check_ids, check_schema, id_values, open_input, read_groups
from chunkwise.inputs.summary import (
    FIRST_REJECTS_KEPT,
    HISTORY_COLUMN,
    LINE_ERROR_COLUMN,
    LONGEST_KEPT,
    OPTIONS_COLUMN,
    REASON_EMPTY,
    REASON_NULL,
    REQUEST_COLUMNS,
    ROW_COLUMN,
    InputSummary,
    LongRequest,
    Reject,
)
from chunkwise.tokens import MAX_PLAUSIBLE_CHARS_PER_TOKEN, min_plausible_tokens


class Scan:
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
        self._fits: dict[int, int] = {num_predict: max_chars}
        self.has_system = has_system
        self.rows = self.rejected = self.history_rows = 0
        self.first_rejects: list[Reject] = []
        self.longest: list[tuple[int, int, Any, bool]] = []  # min-heap of (chars, -row, id, own system)
        self.accepted_rows: list[pa.Array] = []
        self.prompt_chars: list[pa.Array] = []
        self.system_chars: list[pa.Array] = []

    def _max_chars(self, num_predict: int) -> int:
        """Most characters of a request that answers in up to `num_predict` tokens (-1: none fit)."""
        if num_predict not in self._fits:
            limit = self.num_ctx - num_predict
            fit = int((limit + 1) * MAX_PLAUSIBLE_CHARS_PER_TOKEN) if limit > 0 else -1
            while fit >= 0 and min_plausible_tokens(fit) > limit:
                fit -= 1
            self._fits[num_predict] = fit
        return self._fits[num_predict]

    def _too_long(self, chars: int, with_system: bool, num_predict: int) -> str:
        what = "prompt plus the row's system prompt is" if with_system else "prompt is"
        limit = self.num_ctx - num_predict
        if limit <= 0:
            return (f"the line's max_tokens {num_predict} leaves no room in num_ctx {self.num_ctx}; lower max_tokens "
                    "or raise num_ctx")
        return (
            f"{what} {chars} characters, at least {min_plausible_tokens(chars)} tokens even at "
            f"{MAX_PLAUSIBLE_CHARS_PER_TOKEN:g} characters per token, more than num_ctx {self.num_ctx} - "
            f"num_predict {num_predict} = {limit}: shorten or split the prompt, or raise num_ctx"
        )

    def _limits(self, table: pa.Table) -> tuple[pa.Array | int, list[int] | None]:
        """(most characters per row, each row's num_predict or None when every row uses the run's)."""
        if OPTIONS_COLUMN not in table.column_names:
            return self.max_chars, None
        own = [orjson.loads(o).get("num_predict", self.num_predict) if o else self.num_predict
               for o in table.column(OPTIONS_COLUMN).to_pylist()]
        return pa.array([self._max_chars(n) for n in own], pa.int64()), own

    def classify(self, table: pa.Table, ids: pa.Array | None = None) -> tuple[pa.Array, pa.Array, list[str]]:
        """Classify the next rows (`table` has `prompt`, `system` if any, and `id` unless `ids` is
        given). Returns (row numbers, keep mask, reasons of the rejected rows in order)."""
        n = table.num_rows
        ids = id_values(table.column("id")) if ids is None else ids
        rows = pa.array(range(self.rows, self.rows + n), pa.int64())
        self.rows += n
        prompt = as_text(table.column("prompt").combine_chunks())
        own_chars = pc.cast(pc.utf8_length(prompt), pa.int64())
        chars = own_chars
        has_history = HISTORY_COLUMN in table.column_names
        if has_history:  # a chat's earlier turns are sent with it: they count as its prompt
            history = table.column(HISTORY_COLUMN).combine_chunks()
            chars = pc.add(own_chars, history_chars(history))
        system_chars = None
        total = chars
        if self.has_system:
            system_chars = pc.cast(pc.utf8_length(as_text(table.column("system").combine_chunks())), pa.int64())
            total = pc.add(chars, pc.fill_null(system_chars, 0))
        max_chars, own_predict = self._limits(table)
        bad = pc.or_kleene(pc.is_null(prompt), pc.less_equal(own_chars, 0))
        bad = pc.or_(pc.fill_null(bad, True), pc.fill_null(pc.utf8_is_space(prompt), False))
        bad = pc.or_(bad, pc.fill_null(pc.greater(total, max_chars), False))
        has_line_error = LINE_ERROR_COLUMN in table.column_names
        line_error = table.column(LINE_ERROR_COLUMN).combine_chunks() if has_line_error else None
        if line_error is not None:
            bad = pc.or_(bad, pc.is_valid(line_error))
        keep = pc.invert(bad)
        reasons: list[str] = []
        for i in pc.indices_nonzero(bad).to_pylist():
            c = own_chars[i].as_py()
            row_predict = own_predict[i] if own_predict is not None else self.num_predict
            if line_error is not None and line_error[i].is_valid:
                reason = line_error[i].as_py()
            elif c is None:
                reason = REASON_NULL
            elif c == 0:
                reason = REASON_EMPTY
            elif (total[i].as_py() or 0) > self._max_chars(row_predict):
                reason = self._too_long(total[i].as_py(), system_chars is not None and system_chars[i].is_valid,
                                        row_predict)
            else:
                reason = (f"prompt is only whitespace ({c} characters): give the row a prompt or remove it "
                          "from the input")
            reasons.append(reason)
            if len(self.first_rejects) < FIRST_REJECTS_KEPT:
                self.first_rejects.append(Reject(rows[i].as_py(), ids[i].as_py(), reason))
        self.rejected += len(reasons)
        if has_history:
            self.history_rows += pc.sum(pc.and_(pc.is_valid(history), keep)).as_py() or 0
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
            system_chars=cat(self.system_chars) if self.has_system else None, history_rows=self.history_rows,
            **extra,
        )


def carried_columns(schema: pa.Schema) -> tuple[str, ...]:
    """The columns of a canonical table (`chunkwise.inputs.columns`) that are carried into the results."""
    return tuple(n for n in schema.names if n not in REQUEST_COLUMNS and n != ROW_COLUMN)


def batch_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an OpenAI batch file (`.jsonl`, read by `chunkwise.inputs.batchfile`)."""
    return Path(path).suffix.lower() == ".jsonl"


def validate_only(path: str | os.PathLike[str], *, num_ctx: int, num_predict: int,
                  run: dict[str, Any] | None = None, columns: InputColumns | None = None) -> InputSummary:
    """Validate and classify every row without writing anything (reads the ids and the request's columns).
    `run` (the run's model) is what a batch file's lines are checked against; `columns` the column mapping
    and row limit."""
    path = Path(path)
    if batch_file(path):
        from chunkwise.inputs.batchfile import validate_batch

        return validate_batch(path, num_ctx=num_ctx, num_predict=num_predict, run=run, columns=columns)
    pf = open_input(path)
    schema, layout = check_schema(path, pf, columns)
    ids = check_ids(path, pf, layout)
    scan = Scan(layout.has_system or layout.chat, num_ctx, num_predict)
    for table in read_groups(path, pf, layout.read_columns(), layout):
        scan.classify(table, ids.slice(scan.rows, table.num_rows))
    return scan.summary(path, str(ids.type), carried_columns(canonical_schema(schema, layout)))
