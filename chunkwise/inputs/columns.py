"""Which input columns a request is made of, and the one shape every input takes inside a run.

A Parquet input names its ids and its requests by column (`InputColumns`: `--id-column`, default `id`;
`--prompt-column`, default `prompt`, else `messages`; `--limit N` keeps the first N rows). The request
column is either a prompt (a string) or a chat (`messages`: a list of `{role, content}` structs, roles
system, developer, user or assistant, ending with the user's turn, as OpenAI's and Ollama's chat APIs take
them). Inside a run every input is read as the canonical table:

    id        the ids, under their own type
    prompt    the user's (last) turn
    system    the row's own system prompt (a chat's leading system turn, else the `system` column; null:
              the run's)
    _history  a chat's turns between its system prompt and its last turn (null: none)
    _options  an OpenAI batch line's own request options, JSON (`chunkwise.inputs.batchfile`; null: none)
    ...       every other column, carried through to the results

A chat that breaks these rules is quarantined with the reason (`LINE_ERROR_COLUMN`), never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from chunkwise.errors import InputError
from chunkwise.inputs.summary import HISTORY_COLUMN, LINE_ERROR_COLUMN, OPTIONS_COLUMN, ROW_COLUMN

#: Roles a chat turn may take; `developer` is OpenAI's newer name for `system`.
ROLES = ("system", "developer", "user", "assistant")
TURN_TYPE = pa.struct([("role", pa.string()), ("content", pa.large_string())])
HISTORY_TYPE = pa.list_(TURN_TYPE)
#: Columns chunkwise adds or reads under its own names; an input holding one is refused.
RESERVED = (ROW_COLUMN, HISTORY_COLUMN, OPTIONS_COLUMN)


@dataclass(frozen=True)
class InputColumns:
    """The user's column mapping and trial limit (RunParams `id_column`, `prompt_column`, `limit`)."""

    id: str = "id"
    prompt: str | None = None
    limit: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id_column": self.id, "prompt_column": self.prompt, "limit": self.limit}


@dataclass(frozen=True)
class Layout:
    """Where a file's request parts are: `text` is its prompt or messages column (`chat`: a messages one)."""

    id: str
    text: str
    chat: bool
    has_system: bool
    limit: int | None

    def read_columns(self, names: list[str] | None = None) -> list[str]:
        """The input columns to read: `names` (None: the request's own columns, id excluded)."""
        if names is not None:
            return names
        return [self.text] + (["system"] if self.has_system else [])


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
                or pa.types.is_null(t))


def _is_chat(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)):
        return False
    item = t.value_type
    return (pa.types.is_struct(item) and item.get_field_index("role") >= 0 and item.get_field_index("content") >= 0
            and _is_text(item.field("role").type) and _is_text(item.field("content").type))


def layout_of(path: Path, schema: pa.Schema, columns: InputColumns, *, internal: bool = False) -> Layout:
    """The file's layout under `columns`, or a one-line `InputError` naming the column and what to do.
    `internal`: a table chunkwise converted itself (a batch file), whose reserved columns are its own."""
    names = schema.names
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if not internal:
        for reserved in RESERVED:
            if reserved in names:
                raise InputError(f"{path}: has a column named `{reserved}`, which chunkwise adds; rename or drop it")
    if columns.id not in names:
        flag = "" if columns.id == "id" else " (--id-column)"
        raise InputError(f"{path}: no `{columns.id}` column{flag} (columns: {shown}); add a unique string or "
                         "integer `id` column, or name the id column with --id-column")
    if columns.prompt is not None:
        if columns.prompt not in names:
            raise InputError(f"{path}: no `{columns.prompt}` column (--prompt-column; columns: {shown}); name one of "
                             "the file's columns")
        text = columns.prompt
    elif "prompt" in names and "messages" in names and not internal:
        raise InputError(f"{path}: has both `prompt` and `messages`; name the one that holds the requests with "
                         "--prompt-column")
    elif "prompt" in names:
        text = "prompt"
    elif "messages" in names:
        text = "messages"
    else:
        raise InputError(f"{path}: no `prompt` column (columns: {shown}); add a string `prompt` column (or a "
                         "`messages` column of chats), or name the column holding the requests with --prompt-column")
    for canonical, mapped in (("id", columns.id), ("prompt", text)):
        if mapped != canonical and canonical in names:
            raise InputError(f"{path}: has a `{canonical}` column besides the mapped `{mapped}`; rename or drop "
                             f"`{canonical}` (results name the ids `id`)")
    t = schema.field(text).type
    chat = _is_chat(t)
    if not chat and not _is_text(t):
        raise InputError(f"{path}: column `{text}` has type {t}; requests must be strings (prompts) or lists of "
                         "{role: string, content: string} (chats): cast it")
    has_system = "system" in names
    if has_system and not _is_text(schema.field("system").type):
        raise InputError(
            f"{path}: column `system` has type {schema.field('system').type}; `system` must be strings "
            "(a row's own system prompt, null for the run's): cast it to string or drop the column"
        )
    return Layout(id=columns.id, text=text, chat=chat, has_system=has_system, limit=columns.limit)


def canonical_schema(schema: pa.Schema, layout: Layout) -> pa.Schema:
    """The schema `canonical` gives a table of all of `schema`'s columns."""
    fields: list[pa.Field] = []
    for f in schema:
        if f.name == layout.id:
            fields.append(f.with_name("id"))
        elif f.name == layout.text and layout.chat:
            fields += [pa.field("prompt", pa.large_string()), pa.field(HISTORY_COLUMN, HISTORY_TYPE)]
            fields += [] if layout.has_system else [pa.field("system", pa.large_string())]
        elif f.name == layout.text:
            fields.append(f.with_name("prompt"))
        elif f.name == "system" and layout.chat:
            fields.append(pa.field("system", pa.large_string()))
        elif not (f.name == LINE_ERROR_COLUMN and layout.chat):
            fields.append(f)
    if layout.chat:
        fields.append(pa.field(LINE_ERROR_COLUMN, pa.large_string()))
    return pa.schema(fields, metadata=schema.metadata)


def canonical(table: pa.Table, layout: Layout) -> pa.Table:
    """`table` (columns read from the input) in the canonical shape of the module docstring."""
    renames = {layout.id: "id"}
    if not layout.chat:
        renames[layout.text] = "prompt"
        return table.rename_columns([renames.get(n, n) for n in table.column_names])
    prompt, system, history, problems = split_chats(table.column(layout.text).to_pylist(),
                                                    table.column("system").to_pylist() if layout.has_system else None)
    out = table.rename_columns([renames.get(n, n) for n in table.column_names])
    at = out.column_names.index(layout.text)
    out = out.remove_column(at).add_column(at, "prompt", prompt).add_column(at + 1, HISTORY_COLUMN, history)
    if layout.has_system:
        out = out.set_column(out.column_names.index("system"), "system", system)
    else:
        out = out.add_column(at + 2, "system", system)
    previous = out.column(LINE_ERROR_COLUMN).to_pylist() if LINE_ERROR_COLUMN in out.column_names else None
    if previous is not None:
        problems = [p or q for p, q in zip(previous, problems, strict=True)]
        out = out.drop_columns([LINE_ERROR_COLUMN])
    return out.append_column(LINE_ERROR_COLUMN, pa.array(problems, pa.large_string()))


def split_chats(chats: list[Any], systems: list[Any] | None) -> tuple[pa.Array, pa.Array, pa.Array, list[str | None]]:
    """(prompt, system, history, problem) per chat: the last turn, the leading system turn (else the row's
    `system`), the turns between, and why a chat cannot be sent (None when it can)."""
    prompts: list[str | None] = []
    out_systems: list[str | None] = []
    histories: list[list[dict[str, str]] | None] = []
    problems: list[str | None] = []
    for i, chat in enumerate(chats):
        own = systems[i] if systems is not None else None
        problem, prompt, system, history = chat_parts(chat)
        prompts.append(prompt)
        out_systems.append(system if system is not None else own)
        histories.append(history or None)
        problems.append(problem)
    return (pa.array(prompts, pa.large_string()), pa.array(out_systems, pa.large_string()),
            pa.array(histories, HISTORY_TYPE), problems)


def chat_parts(chat: Any) -> tuple[str | None, str | None, str | None, list[dict[str, str]]]:
    """(problem, last user turn, leading system turn, the turns between) of one chat."""
    if not isinstance(chat, list) or not chat:
        return "messages is null or empty: give the row its chat or remove it from the input", None, None, []
    turns = []
    for k, turn in enumerate(chat):
        role, content = (turn or {}).get("role"), (turn or {}).get("content")
        if role not in ROLES:
            return (f"messages[{k}] has role {role!r}; use one of {', '.join(ROLES)}"), None, None, []
        if not isinstance(content, str):
            return f"messages[{k}] has no text content; every turn needs its text", None, None, []
        turns.append({"role": "system" if role == "developer" else role, "content": content})
    system = turns.pop(0)["content"] if turns[0]["role"] == "system" and len(turns) > 1 else None
    if turns[-1]["role"] != "user":
        return "the last of messages is not a user turn; end each chat with the user's request", None, None, []
    return None, turns[-1]["content"], system, turns[:-1]


def history_chars(history: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Characters of each row's earlier turns (int64, 0 where it has none)."""
    if isinstance(history, pa.ChunkedArray):
        history = history.combine_chunks()
    counts = [0] * len(history)
    if len(history) and history.null_count < len(history):
        lengths = pc.utf8_length(pc.list_flatten(history).field("content"))
        parents = pc.list_parent_indices(history)
        sums = pa.table({"p": parents, "n": pc.cast(lengths, pa.int64())}).group_by("p").aggregate([("n", "sum")])
        for p, n in zip(sums.column("p").to_pylist(), sums.column("n_sum").to_pylist(), strict=True):
            counts[p] = n
    return pa.array(counts, pa.int64())
