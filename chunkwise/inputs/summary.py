"""What the validation scan of a request file finds (`chunkwise.inputs.scan`), and the names of
the files and columns staging writes from it (`chunkwise.inputs.stage`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

ROW_COLUMN, REASON_COLUMN = "_row", "_reason"
#: A row's quarantine reason found while reading it (an OpenAI batch line, a chat that cannot be sent); null if good.
LINE_ERROR_COLUMN = "_line_error"
#: A chat's turns before its last (`chunkwise.inputs.columns`) and a batch line's own options, JSON
#: (`chunkwise.inputs.batchfile`): columns of the staged requests, never carried into the results.
HISTORY_COLUMN, OPTIONS_COLUMN = "_history", "_options"
#: Staged columns that are the request itself, not carried into the results.
REQUEST_COLUMNS = ("id", "prompt", "system", HISTORY_COLUMN, OPTIONS_COLUMN, LINE_ERROR_COLUMN)
FIRST_REJECTS_KEPT = 20
LONGEST_KEPT = 50

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
    #: Accepted rows that are chats with earlier turns (conversation mode cannot send them).
    history_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "rows": self.rows, "accepted": self.accepted, "rejected": self.rejected,
            "id_dtype": self.id_dtype, "carried_columns": list(self.carried_columns),
            "has_system": self.has_system, "num_ctx": self.num_ctx, "num_predict": self.num_predict,
            "history_rows": self.history_rows,
            "first_rejects": [{"row": r.row, "id": r.id, "reason": r.reason} for r in self.first_rejects],
        }
