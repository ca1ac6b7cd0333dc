"""OpenAI Batch API output and error files (`--output-format openai`), written beside
results.parquet from it, one line per request in input order, `custom_id` = the request's id.

Line shape (OpenAI API spec, `BatchRequestOutput`: "The per-line object of the batch output and
error files"): `{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null,
"error": {"code", "message"} | null}`, the body being a `chat.completion` object.

- `batch_output.jsonl`: every request the server answered (HTTP 200), as the Batch API writes it:
  `response.status_code` 200, the `chat.completion` body with its `finish_reason`, `error: null`. That
  includes answers chunkwise flags in results.parquet (`status` failed): one stopped by max_tokens
  (`finish_reason` "length", class output_truncated) or one that fails the requested schema
  (invalid_output) is still the server's 200 answer to that line.
- `batch_errors.jsonl`: every request with no answer: `response: null`, `error.code` chunkwise's failure
  class (context_truncated: the server refused the prompt; transient: gave up after its attempts;
  `rejected` for a line quarantined before sending), `error.message` its message.

Together the two files hold exactly one line per input request, as results.parquet does.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow.parquet as pq

from chunkwise.store.files import write_atomic
from chunkwise.store.layout import RunPaths

COLUMNS = ["input_row", "id", "status", "response", "done_reason", "prompt_eval_count", "eval_count",
           "error_class", "error_message"]
#: Rows of results.parquet decoded at a time (the answers are never all in memory).
BATCH_ROWS = 4096


def _ids(run_name: str, row: int) -> tuple[str, str]:
    digest = hashlib.sha256(f"{run_name}/{row}".encode()).hexdigest()
    return f"batch_req_{digest[:24]}", f"req_{digest[24:48]}"


def _completion(r: dict[str, Any], model: str, created: int, request_id: str) -> dict[str, Any]:
    prompt, completion = int(r["prompt_eval_count"] or 0), int(r["eval_count"] or 0)
    return {
        "id": f"chatcmpl-{request_id[4:]}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": r["response"]},
                     "finish_reason": r["done_reason"] or "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def line_for(r: dict[str, Any], *, run_name: str, model: str, created: int) -> tuple[bool, bytes]:
    """(goes to the output file, the JSON line) for one row of results.parquet."""
    line_id, request_id = _ids(run_name, int(r["input_row"]))
    answered = r["response"] is not None and r["status"] != "rejected"
    response = ({"status_code": 200, "request_id": request_id, "body": _completion(r, model, created, request_id)}
                if answered else None)
    error = None if answered else {"code": r["error_class"] or r["status"], "message": r["error_message"] or ""}
    item = {"id": line_id, "custom_id": str(r["id"]), "response": response, "error": error}
    return answered, orjson.dumps(item) + b"\n"


def write_batch_files(paths: RunPaths, *, model: str) -> tuple[Path, Path]:
    """Write batch_output.jsonl (answered) and batch_errors.jsonl (not answered) atomically from results.parquet."""
    created = int(time.time())
    run_name = paths.root.name
    output, errors = paths.batch_output, paths.batch_errors
    error_lines: list[bytes] = []

    def write_output(handle: BinaryIO) -> None:
        results = pq.ParquetFile(paths.results)
        for batch in results.iter_batches(batch_size=BATCH_ROWS, columns=COLUMNS):
            for r in batch.to_pylist():
                ok, line = line_for(r, run_name=run_name, model=model, created=created)
                if ok:
                    handle.write(line)
                else:
                    error_lines.append(line)

    write_atomic(output, write_output)
    write_atomic(errors, b"".join(error_lines))
    return output, errors
