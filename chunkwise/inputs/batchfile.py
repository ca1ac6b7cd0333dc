"""OpenAI Batch API input files (`--input batch.jsonl`), turned into the same request table a
Parquet input gives (the canonical shape of `chunkwise.inputs.columns`), so staging, chunking and
everything after it are unchanged.

One JSON object per line (OpenAI "Batch API", request input object): `custom_id` (unique string),
`method` ("POST"), `url` ("/v1/chat/completions"), `body` (a chat completion request). The request
becomes a row: `id` = custom_id (kept verbatim, so the output files can name it), `prompt` = the last
(user) message, `system` = a leading system (or developer) message, null for the run's own, `_history`
= the turns between (a multi-turn chat), and `_options` = the body's own request options as JSON.

Each line is answered as the Batch API would answer it: its body options `max_tokens` (or
`max_completion_tokens`), `temperature`, `top_p`, `stop`, `seed` and `response_format` are sent with that
request (a line without one gets the run's: --num-predict, --temperature, --seed, --format-file), and they
are part of the request: the input's content digest covers them (`chunkwise.run.manifest`). A batch file
names its model on every line; a run given no --model runs that model.

Same three outcomes as a Parquet file (`chunkwise.inputs.scan`):

- `InputError` for the file as a whole: missing, not UTF-8, no request line, a line that is not a
  JSON object or has no string `custom_id` (the id is what every record hangs on, as a null `id` is
  for Parquet), or a duplicated custom_id.
- Quarantine of one line, with a reason naming the line and field: wrong method or url, a body
  without messages, messages that are not text turns ending with the user's, a `model` other than the
  run's, an option of the wrong type or range, and a body field chunkwise cannot send (`tools`,
  `logprobs`, `n` > 1, ...). Fields that do not change the answer (`stream`, `n` = 1, `user`,
  `metadata`, `store`) are accepted.
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
from chunkwise.inputs.columns import HISTORY_TYPE, ROLES, InputColumns, chat_parts
from chunkwise.inputs.parquet import SCAN_BATCH_ROWS
from chunkwise.inputs.scan import Scan
from chunkwise.inputs.summary import HISTORY_COLUMN, LINE_ERROR_COLUMN, OPTIONS_COLUMN, InputSummary

CHAT_URL = "/v1/chat/completions"
#: Body fields that do not change the answer of one request.
HARMLESS = {"stream", "stream_options", "user", "metadata", "store", "messages", "model"}
#: Body options sent with the line's request: body field -> the option's neutral name (`_options` keys,
#: `chunkwise.backend.ChatOptions`; `format` is a JSON schema or "json").
OPTIONS = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict", "temperature": "temperature",
           "top_p": "top_p", "stop": "stop", "seed": "seed", "response_format": "format"}


def _text(content: Any) -> str | None:
    """A message's text: a string, or a list of `{"type": "text", "text": ...}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def option_value(field: str, value: Any) -> tuple[str | None, Any]:
    """(problem, the value in the run's terms) of one body option: `response_format` as the JSON schema
    (or "json", or None for text) it asks for, `stop` as a list."""
    if field in ("max_tokens", "max_completion_tokens"):
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 131_072
        return (None, value) if ok else (f"body.{field} is {value!r}; give a whole number of tokens, 1-131072", None)
    if field == "temperature":
        ok = _number(value) and 0 <= value <= 2
        return (None, float(value)) if ok else (f"body.temperature is {value!r}; give a number from 0 to 2", None)
    if field == "top_p":
        ok = _number(value) and 0 <= value <= 1
        return (None, float(value)) if ok else (f"body.top_p is {value!r}; give a number from 0 to 1", None)
    if field == "seed":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (None, value) if ok else (f"body.seed is {value!r}; give a whole number", None)
    if field == "stop":
        stops = [value] if isinstance(value, str) else value
        if value is None:
            return None, []
        if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(x, str) and x for x in stops):
            return f"body.stop is {value!r}; give a string or up to 4 non-empty strings", None
        return None, stops
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None, None
    if kind == "json_object":
        return None, "json"
    schema = (value.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if isinstance(schema, dict):
        from chunkwise.schemas import schema_problem

        problem = schema_problem(schema)
        return (None, schema) if problem is None else (f"body.response_format schema is not valid ({problem})", None)
    return ("body.response_format is not {type: text | json_object | json_schema with a schema}; fix it or "
            "remove it"), None


def line_problem(item: dict[str, Any], run: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(reason to quarantine or None, the row's parts: prompt, system, history, options) for one parsed
    line. `run` holds the run's model (absent: not compared)."""
    if item.get("method", "POST") != "POST":
        return f"method is {item.get('method')!r}; only POST is supported", {}
    if item.get("url") != CHAT_URL:
        return f"url is {item.get('url')!r}; chunkwise sends only {CHAT_URL} requests", {}
    body = item.get("body")
    if not isinstance(body, dict):
        return "body is not a JSON object; give the chat completion request as `body`", {}
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "body.messages is missing or empty; give a list of messages", {}
    turns = [{"role": m.get("role"), "content": _text(m.get("content"))} if isinstance(m, dict) else None
             for m in messages]
    for k, turn in enumerate(turns):
        if turn is None or turn["role"] not in ROLES:
            return f"body.messages[{k}] is not a message with a role ({', '.join(ROLES)})", {}
        if turn["content"] is None:
            return f"body.messages[{k}] content is not text; chunkwise sends text only", {}
    problem, prompt, system, history = chat_parts(turns)
    if problem:
        return problem.replace("the last of messages", "the last message of body.messages"), {}
    if "model" in run and body.get("model", run["model"]) != run["model"]:
        return (f"body.model is {body.get('model')!r} but the run's model is {run['model']!r}; one run serves one "
                "model: give each model's lines a file of their own (or --model to run that one)"), {}
    options: dict[str, Any] = {}
    for field, value in body.items():
        if field in HARMLESS or (field == "n" and value == 1):
            continue
        if field not in OPTIONS:
            return (f"body.{field} is not supported (chunkwise sends max_tokens, temperature, top_p, stop, seed and "
                    "response_format); remove it from the line"), {}
        bad, given = option_value(field, value)
        if bad:
            return bad, {}
        options[OPTIONS[field]] = given
    return None, {"prompt": prompt, "system": system, "history": history or None,
                  "options": orjson.dumps(options).decode() if options else None}


def file_model(path: str | os.PathLike[str]) -> str | None:
    """The model the file's first request line names (a batch file names it on every line), or None."""
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    item = orjson.loads(raw) if raw.strip() else None
                except orjson.JSONDecodeError:
                    return None  # the staging scan reports the bad line
                body = item.get("body") if isinstance(item, dict) else None
                if isinstance(body, dict) and isinstance(body.get("model"), str) and body["model"]:
                    return str(body["model"])
    except OSError:
        return None
    return None


def read_batch(path: str | os.PathLike[str], run: dict[str, Any] | None = None,
               limit: int | None = None) -> pa.Table:
    """The request table of a batch file (its first `limit` request lines): `id` (custom_id), `prompt`,
    `system`, `_history`, `_options`, `LINE_ERROR_COLUMN`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the input path")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file; give the path of one batch .jsonl file")
    run = run or {}
    columns: dict[str, list[Any]] = {"id": [], "prompt": [], "system": [], "history": [], "options": [],
                                     "problem": []}
    seen: dict[str, int] = {}
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the `with` below; opening is what can fail
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror}); check the file's permissions") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if limit is not None and len(seen) >= limit:
                break
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
            problem, parts = line_problem(item, run)
            columns["id"].append(custom_id)
            for name in ("prompt", "system", "history", "options"):
                columns[name].append(parts.get(name))
            columns["problem"].append(f"line {number}: {problem}" if problem else None)
    if not seen:
        raise InputError(f"{path}: has no request lines; write one JSON request object per line")
    text = pa.large_string()
    return pa.table({"id": pa.array(columns["id"], text), "prompt": pa.array(columns["prompt"], text),
                     "system": pa.array(columns["system"], text),
                     HISTORY_COLUMN: pa.array(columns["history"], HISTORY_TYPE),
                     OPTIONS_COLUMN: pa.array(columns["options"], text),
                     LINE_ERROR_COLUMN: pa.array(columns["problem"], text)})


def run_options(params: Any) -> dict[str, Any]:
    """What a batch file's lines are checked against: the run's model (a RunParams)."""
    return {"model": params.model}


def validate_batch(path: Path, *, num_ctx: int, num_predict: int, run: dict[str, Any] | None,
                   columns: InputColumns | None = None) -> InputSummary:
    """`chunkwise.inputs.scan.validate_only` for a batch file: the same scan, nothing written."""
    table = read_batch(path, run, columns.limit if columns else None)
    scan = Scan(True, num_ctx, num_predict)
    for batch in table.to_batches(max_chunksize=SCAN_BATCH_ROWS):
        scan.classify(pa.Table.from_batches([batch], schema=table.schema))
    return scan.summary(path, str(table.schema.field("id").type), ())


def converted_copy(path: Path, run_dir: Path, *, run: dict[str, Any] | None,
                   columns: InputColumns | None = None) -> Path:
    """The batch file as a Parquet request file in the run directory (a temporary name that
    `chunkwise.run.rundir.remove_temp_files` clears if a crash leaves it), for staging to read."""
    import pyarrow.parquet as pq

    from chunkwise.store.layout import RunPaths

    table = read_batch(path, run, columns.limit if columns else None)
    out = RunPaths(run_dir).temp("batch-input.parquet")
    pq.write_table(table, out, compression="zstd")
    return out
