"""Request bodies decoded the way Ollama's gin handlers decode them, with Go's error texts.

Ollama binds every body with gin's `ShouldBindJSON` into a Go struct (`v0.24.0:server/routes.go:2181-2187`
chat, `:196-203` generate, `:1119-1127` show): an empty body is io.EOF, answered "missing request
body"; anything else that fails is a 400 whose text is encoding/json's:

- a body cut short: `unexpected EOF`; other bad syntax: `invalid character 'x' <context>` with the
  context words of Go's scanner for the common cases (`SYNTAX_CONTEXT`; an array's "after array
  element" reads as an object's);
- a value of the wrong JSON type: `json: cannot unmarshal <JSON type> into Go struct field
  <Struct>.<path> of type <Go type>` (the first one in document order; decoding goes on after it);
- a field with its own UnmarshalJSON (`keep_alive`: api.Duration, `think`: api.ThinkValue) returns that
  method's error, and decoding stops there (`api/types.go`).

JSON null leaves a field unset and is never an error. Unknown fields are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any


class BindError(Exception):
    """400 with Go's message."""


def json_kind(value: Any) -> str:
    """The JSON type word Go's UnmarshalTypeError uses."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def decode(raw: bytes) -> Any:
    """The JSON document, or BindError with Go's wording."""
    if not raw.strip():
        raise BindError("missing request body")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise BindError("unexpected EOF") from None
        char = exc.doc[exc.pos]
        context = next((go for py, go in SYNTAX_CONTEXT if exc.msg.startswith(py)), "looking for beginning of value")
        raise BindError(f"invalid character {char!r} {context}") from None
    except ValueError:  # not UTF-8
        raise BindError("invalid character looking for beginning of value") from None


#: Python's json error -> the context words of Go's scanner (`encoding/json/scanner.go`).
SYNTAX_CONTEXT = (
    ("Expecting property name", "looking for beginning of object key string"),
    ("Expecting ':' delimiter", "after object key"),
    ("Expecting ',' delimiter", "after object key:value pair"),
    ("Extra data", "after top-level value"),
)


#: A Go field: its Go type as errors name it, and whether a JSON value fits it.
Field = tuple[str, Callable[[Any], bool]]


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_list(v: Any) -> bool:
    return isinstance(v, list)


def _is_obj(v: Any) -> bool:
    return isinstance(v, dict)


def _any(v: Any) -> bool:
    return True


MESSAGE_FIELDS: dict[str, Field] = {
    "role": ("string", _is_str), "content": ("string", _is_str), "thinking": ("string", _is_str),
    "tool_name": ("string", _is_str), "tool_call_id": ("string", _is_str),
    "images": ("[]api.ImageData", _is_list), "tool_calls": ("[]api.ToolCall", _is_list),
}
CHAT_FIELDS: dict[str, Field] = {
    "model": ("string", _is_str), "messages": ("[]api.Message", _is_list), "stream": ("bool", _is_bool),
    "format": ("json.RawMessage", _any), "options": ("map[string]interface {}", _is_obj),
    "truncate": ("bool", _is_bool), "shift": ("bool", _is_bool), "logprobs": ("bool", _is_bool),
    "top_logprobs": ("int", _is_int), "tools": ("api.Tools", _is_list),
}
GENERATE_FIELDS: dict[str, Field] = {
    "model": ("string", _is_str), "prompt": ("string", _is_str), "suffix": ("string", _is_str),
    "system": ("string", _is_str), "template": ("string", _is_str), "context": ("[]int", _is_list),
    "stream": ("bool", _is_bool), "raw": ("bool", _is_bool), "format": ("json.RawMessage", _any),
    "images": ("[]api.ImageData", _is_list), "options": ("map[string]interface {}", _is_obj),
    "truncate": ("bool", _is_bool), "shift": ("bool", _is_bool), "logprobs": ("bool", _is_bool),
    "top_logprobs": ("int", _is_int),
}
SHOW_FIELDS: dict[str, Field] = {
    "model": ("string", _is_str), "system": ("string", _is_str), "template": ("string", _is_str),
    "verbose": ("bool", _is_bool), "options": ("map[string]interface {}", _is_obj), "name": ("string", _is_str),
}


def bind(body: Any, struct: str, fields: Mapping[str, Field],
         custom: Mapping[str, Callable[[Any], None]] | None = None) -> dict[str, Any]:
    """Check `body` against a Go struct's fields; returns it, or raises BindError (see the module docstring).
    `custom`: field -> a check that raises BindError itself (an UnmarshalJSON method; aborts decoding)."""
    if not isinstance(body, dict):
        raise BindError(f"json: cannot unmarshal {json_kind(body)} into Go value of type api.{struct}")
    first: str | None = None
    for key, value in body.items():
        if value is None:
            continue
        if custom and key in custom:
            custom[key](value)
            continue
        field = fields.get(key)
        if field is not None and not field[1](value):
            first = first or _type_error(value, struct, key, field[0])
        elif key == "messages" and isinstance(value, list):
            first = first or _messages_error(value)
    if first:
        raise BindError(first)
    return body


def _type_error(value: Any, struct: str, path: str, go_type: str) -> str:
    return f"json: cannot unmarshal {json_kind(value)} into Go struct field {struct}.{path} of type {go_type}"


def _messages_error(messages: list[Any]) -> str | None:
    for message in messages:
        if message is None:
            continue
        if not isinstance(message, dict):
            return _type_error(message, "ChatRequest", "messages", "api.Message")
        for key, value in message.items():
            field = MESSAGE_FIELDS.get(key)
            if value is not None and field is not None and not field[1](value):
                return _type_error(value, "Message", f"messages.{key}", field[0])
    return None
