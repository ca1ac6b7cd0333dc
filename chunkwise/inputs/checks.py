"""What a run's input is checked against, in one place, so `chunkwise plan` checks an input exactly as
`chunkwise run` stages it: the limits of the quarantine (num_ctx, num_predict), the run's model (a batch
file's lines must name it), the column mapping and the row limit; and the one-line refusal of an input
with no request left to send."""

from __future__ import annotations

from typing import Any

from chunkwise.errors import SetupError
from chunkwise.inputs.columns import InputColumns
from chunkwise.inputs.scan import batch_file
from chunkwise.inputs.summary import InputSummary
from chunkwise.params import RunParams


def input_checks(params: RunParams) -> dict[str, Any]:
    """Keyword arguments of `stage_input` and `validate_only` for a run with `params`."""
    from chunkwise.inputs.batchfile import run_options

    if batch_file(params.input_path) and (params.id_column or params.prompt_column):
        raise SetupError("--id-column and --prompt-column map a Parquet file's columns; an OpenAI batch file's ids "
                         "are its custom_ids and its requests its bodies: leave them out")
    return {"num_ctx": params.num_ctx, "num_predict": params.num_predict, "run": run_options(params),
            "columns": InputColumns(params.id_column or "id", params.prompt_column, params.limit)}


def with_file_model(params: RunParams) -> RunParams:
    """`params`, running the model an OpenAI batch file names when no model was given (as the Batch API
    runs each line's `body.model`)."""
    if "model" in params.model_fields_set or not batch_file(params.input_path):
        return params
    from chunkwise.inputs.batchfile import file_model

    model = file_model(params.input_path)
    return params.model_copy(update={"model": model}) if model else params


def no_accepted_rows(summary: InputSummary, *, rejects: str | None) -> str:
    """The one line that refuses a run none of whose rows can be sent (exit 2)."""
    first = summary.first_rejects[0] if summary.first_rejects else None
    reason = f"; the first, row {first.row} id {first.id!r}: {first.reason}" if first else ""
    where = f" (every reason in {rejects})" if rejects else ""
    return (f"{summary.path}: none of its {summary.rows} rows can be sent{where}{reason}; fix the input "
            "and run again")


def conversation_problem(summary: InputSummary, params: RunParams) -> str | None:
    """Why conversation mode cannot send this input (chats with earlier turns), or None."""
    if params.mode != "conversation" or not summary.history_rows:
        return None
    return (f"{summary.history_rows} of the requests in {summary.path} are chats with earlier turns; conversation "
            "mode sends each request as one turn of its chunk's chat: use --mode independent (the default)")
