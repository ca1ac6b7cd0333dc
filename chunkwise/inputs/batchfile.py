"""OpenAI Batch API input files (`--input batch.jsonl`), turned into the same request table a
Parquet input gives, so staging, chunking and everything after it are unchanged.

One JSON object per line (OpenAI "Batch API", request input object): `custom_id` (unique string),
`method` ("POST"), `url` ("/v1/chat/completions"), `body` (a chat completion request). The request
becomes a row: `id` = custom_id (kept verbatim, so the output files can name it), `prompt` = the user
message, `system` = a leading system (or developer) message, null for the run's own.

Same three outcomes as a Parquet file (`chunkwise.inputs.scan`):

- `InputError` for the file as a whole: missing, not UTF-8, no request line, a line that is not a
  JSON object or has no string `custom_id` (the id is what every record hangs on, as a null `id` is
  for Parquet), or a duplicated custom_id.
- Quarantine of one line, with a reason naming the line and field: wrong method or url, a body
  without messages, messages that are not (system?, user) text turns, and a body option that
  differs from the run's (chunkwise applies one model and one set of options to a whole run, so a
  line asking for another `max_tokens`, `temperature`, `seed`, `model` or `response_format` would be
  answered differently from what it asks for). Fields that do not change the answer (`stream`,
  `n` = 1, `user`, `metadata`, `store`) are accepted.
- Accepted rows.

The rejects carry their reason in `LINE_ERROR_COLUMN`, which the scan turns into a quarantine reason.
Batch files are bounded (OpenAI: 50,000 requests, 200 MB), so the table is built in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from chunkwise.errors import InputError
from chunkwise.inputs.parquet import SCAN_BATCH_ROWS
from chunkwise.inputs.scan import Scan
from chunkwise.inputs.summary import LINE_ERROR_COLUMN, InputSummary

CHAT_URL = "/v1/chat/completions"
#: Body fields that do not change the answer of one request.
HARMLESS = {"stream", "stream_options", "user", "metadata", "store", "messages"}
#: body field -> (run option name, flag to set it).
OPTIONS = {"max_tokens": ("num_predict", "--num-predict"), "max_completion_tokens": ("num_predict", "--num-predict"),
           "temperature": ("temperature", "--temperature"), "seed": ("seed", "--seed"),
           "model": ("model", "--model"), "response_format": ("format", "--format-file")}


def _text(content: Any) -> str | None:
    """A message's text: a string, or a list of `{"type": "text", "text": ...}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return None


def _given(field: str, value: Any) -> Any:
    """A body option in the run's terms: `response_format` as the JSON schema (or "json") it asks for."""
    if field == "response_format" and isinstance(value, dict):
        kind = value.get("type")
        if kind == "json_schema":
            return (value.get("json_schema") or {}).get("schema")
        if kind == "json_object":
            return "json"
        if kind == "text":
            return None
    return value


def line_problem(item: dict[str, Any], run: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(reason to quarantine or None, prompt, system) for one parsed line. `run` holds the run's
    model, num_predict, temperature, seed and format (a key absent from `run` is not compared)."""
    if item.get("method", "POST") != "POST":
        return f"method is {item.get('method')!r}; only POST is supported", None, None
    if item.get("url") != CHAT_URL:
        return f"url is {item.get('url')!r}; chunkwise sends only {CHAT_URL} requests", None, None
    body = item.get("body")
    if not isinstance(body, dict):
        return "body is not a JSON object; give the chat completion request as `body`", None, None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "body.messages is missing or empty; give a list of messages", None, None
    system = None
    if len(messages) == 2 and isinstance(messages[0], dict) and messages[0].get("role") in ("system", "developer"):
        system = _text(messages[0].get("content"))
        if system is None:
            return "body.messages[0] content is not text; chunkwise sends text only", None, None
    elif len(messages) != 1:
        return (f"body.messages has {len(messages)} messages; chunkwise sends one user message per request, "
                "optionally after one system message: split the conversation or send it as one prompt"), None, None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return "the last message of body.messages is not a user message; end with the user's request", None, None
    prompt = _text(last.get("content"))
    if prompt is None:
        return "the user message's content is not text; chunkwise sends text only", None, None
    for field, value in body.items():
        if field in HARMLESS or (field == "n" and value == 1):
            continue
        if field not in OPTIONS:
            return (f"body.{field} is not supported (chunkwise applies one set of options to the whole run); "
                    "remove it from the line"), None, None
        name, flag = OPTIONS[field]
        if name not in run:
            continue
        wanted = run[name]
        if _given(field, value) != wanted:
            return (f"body.{field} is {value!r} but the run's {name} is {wanted!r}; give {flag} to match it, "
                    "or remove the field from the line"), None, None
    return None, prompt, system


def read_batch(path: str | os.PathLike[str], run: dict[str, Any] | None = None) -> pa.Table:
    """The request table of a batch file: `id` (custom_id), `prompt`, `system`, `LINE_ERROR_COLUMN`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the input path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file; give the path of one batch .jsonl file")
    run = run or {}
    ids: list[str] = []
    prompts: list[str | None] = []
    systems: list[str | None] = []
    problems: list[str | None] = []
    seen: dict[str, int] = {}
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the `with` below; opening is what can fail
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror}); check the file's permissions") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number} is not JSON ({exc}); write one JSON object per line") from None
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str) or not item["custom_id"]:
                raise InputError(f"{path}: line {number} has no string `custom_id`; give every request a unique "
                                 "custom_id")
            custom_id = item["custom_id"]
            if custom_id in seen:
                raise InputError(f"{path}: custom_id {custom_id!r} appears on lines {seen[custom_id]} and {number}; "
                                 "custom_ids must be unique")
            seen[custom_id] = number
            problem, prompt, system = line_problem(item, run)
            ids.append(custom_id)
            prompts.append(prompt)
            systems.append(system)
            problems.append(f"line {number}: {problem}" if problem else None)
    if not ids:
        raise InputError(f"{path}: has no request lines; write one JSON request object per line")
    return pa.table({"id": pa.array(ids, pa.large_string()), "prompt": pa.array(prompts, pa.large_string()),
                     "system": pa.array(systems, pa.large_string()),
                     LINE_ERROR_COLUMN: pa.array(problems, pa.large_string())})


def run_options(params: Any) -> dict[str, Any]:
    """What a batch file's lines are checked against: the run's model and options (a RunParams)."""
    return {"model": params.model, "num_predict": params.num_predict, "temperature": params.temperature,
            "seed": params.seed, "format": params.format}


def validate_batch(path: Path, *, num_ctx: int, num_predict: int, run: dict[str, Any] | None) -> InputSummary:
    """`chunkwise.inputs.scan.validate_only` for a batch file: the same scan, nothing written."""
    table = read_batch(path, {"num_predict": num_predict, **(run or {})})
    scan = Scan(True, num_ctx, num_predict)
    for batch in table.to_batches(max_chunksize=SCAN_BATCH_ROWS):
        scan.classify(pa.Table.from_batches([batch], schema=table.schema))
    return scan.summary(path, str(table.schema.field("id").type), ())


def converted_copy(path: Path, run_dir: Path, *, num_predict: int, run: dict[str, Any] | None) -> Path:
    """The batch file as a Parquet request file in the run directory (a temporary name that
    `chunkwise.run.rundir.remove_temp_files` clears if a crash leaves it), for staging to read."""
    import pyarrow.parquet as pq

    from chunkwise.store.layout import RunPaths

    table = read_batch(path, {"num_predict": num_predict, **(run or {})})
    out = RunPaths(run_dir).temp("batch-input.parquet")
    pq.write_table(table, out, compression="zstd")
    return out
