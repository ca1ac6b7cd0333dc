"""Parsing and validating /api/chat and /api/generate bodies into one `CompletionRequest`.

Errors are `ApiError(status, message)` with Ollama's wording where the research names it
(`model is required`, `model 'X' not found`, Go's duration errors for keep_alive, `"X" does not
support thinking`, `invalid think value`).

`think` (`v0.33.0-rc2:api/types.go:1125-1222`): true/false or one of "high", "medium", "low",
"max"; anything else is a 400 with ThinkValue.UnmarshalJSON's message (the string "false"
included). On a thinking-capable model an unset `think` means true since v0.12.4
(`server/routes.go:2614-2620` chat, `:453-458` generate); a truthy `think` on any other model is
400 `"<model as sent>" does not support thinking` (`routes.go:2628`, `:461`). Levels are accepted
by every thinking model (`docs/capabilities/thinking.mdx:19`); gpt-oss cannot stop thinking
(`thinking.mdx:12`). `truncate` and `shift` are read only from v0.12.6 on (era.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chunkwise.harness.sim.era import Era
from chunkwise.harness.sim.fingerprint import chat_fingerprint, generate_fingerprint
from chunkwise.harness.sim.keepalive import DurationError, parse_keep_alive
from chunkwise.harness.sim.profiles import ModelProfile, resolve

THINK_LEVELS = ("high", "medium", "low", "max")
INVALID_THINK = 'invalid think value: {!r} (must be "high", "medium", "low", "max", true, or false)'
THINK_TYPE = 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'

#: Integer options the simulator reads, and their Ollama defaults (api.DefaultOptions).
INT_OPTIONS = {"num_ctx": None, "num_keep": 4, "num_predict": -1, "seed": -1}
DEFAULT_TEMPERATURE = 0.8


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class CompletionRequest:
    kind: str  # "chat" or "generate"
    model: str
    body: dict[str, Any]
    fingerprint: str
    profile: ModelProfile | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    stream: bool = True
    keep_alive_s: float = 300.0
    keep_alive_given: bool = False
    fmt: Any = None
    truncate: bool = True
    shift: bool = True
    num_ctx: int | None = None
    num_keep: int = 4
    num_predict: int = -1
    seed: int = -1
    temperature: Any = DEFAULT_TEMPERATURE
    stop: list[str] = field(default_factory=list)
    #: Thinking in force: "" (off) or a level ("medium" for plain true, as ThinkValue.String()).
    think: str = ""

    @property
    def empty(self) -> bool:
        """No prompt at all: Ollama only loads (or, with keep_alive 0, unloads) the model."""
        return not self.messages if self.kind == "chat" else not self.prompt


def parse_json(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON in request body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {type(body).__name__} into a request object")
    return body


def parse_head(kind: str, raw: bytes) -> CompletionRequest:
    """Steps that must succeed before the request has a fingerprint: JSON, model, messages/prompt."""
    body = parse_json(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required")
    req = CompletionRequest(kind=kind, model=model, body=body, fingerprint="")
    if kind == "chat":
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "json: cannot unmarshal messages: expected a list of message objects")
        for i, m in enumerate(messages):
            if not isinstance(m.get("content", ""), (str, type(None))) or not isinstance(m.get("role", ""), str):
                raise ApiError(400, f"json: messages[{i}]: role and content must be strings")
        req.messages = messages
        req.fingerprint = chat_fingerprint(model, messages)
    else:
        prompt, system = body.get("prompt"), body.get("system")
        if not isinstance(prompt, (str, type(None))) or not isinstance(system, (str, type(None))):
            raise ApiError(400, "json: prompt and system must be strings")
        req.prompt, req.system, req.raw = prompt or "", system, bool(body.get("raw"))
        req.fingerprint = generate_fingerprint(model, prompt, system)
    return req


def _go_quote(text: str) -> str:
    """Go's %q of a string (enough for the ASCII names and values the simulator sees)."""
    return json.dumps(text)


def parse_think(body: dict[str, Any], profile: ModelProfile, model: str, era: Era) -> str:
    """The thinking level in force ("" = off), or ApiError 400."""
    value = body.get("think")
    if value is not None and not isinstance(value, bool):
        if not isinstance(value, str):
            raise ApiError(400, THINK_TYPE)
        if value not in THINK_LEVELS:
            raise ApiError(400, INVALID_THINK.replace("{!r}", _go_quote(value)))
    if not profile.thinks:
        if value is True or isinstance(value, str):
            raise ApiError(400, f"{_go_quote(model)} does not support thinking")
        return ""
    if value is None:
        value = era.thinks_by_default
    if value is False:
        return "low" if profile.think_levels_only else ""
    return "medium" if value is True else value


def parse_rest(req: CompletionRequest, default_keep_alive_s: float, era: Era | None = None) -> None:
    """Model lookup (404) and every other field (400)."""
    body = req.body
    req.profile = resolve(req.model)
    if req.profile is None:
        raise ApiError(404, f"model '{req.model}' not found")
    try:
        req.keep_alive_s = parse_keep_alive(body.get("keep_alive"), default_keep_alive_s)
    except DurationError as exc:
        raise ApiError(400, str(exc)) from None
    req.keep_alive_given = body.get("keep_alive") is not None
    stream = body.get("stream", True)
    req.stream = True if stream is None else bool(stream)
    fmt = body.get("format")
    if fmt in (None, ""):
        fmt = None
    elif fmt != "json" and not isinstance(fmt, dict):
        raise ApiError(400, "invalid format: expected \"json\" or a valid JSON schema")
    req.fmt = fmt
    for name in ("truncate", "shift"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise ApiError(400, f"json: cannot unmarshal {name}: expected a boolean")
        if era is None or era.truncate_fields:
            setattr(req, name, value is not False)
    if era is not None:
        req.think = parse_think(body, req.profile, req.model, era)
    _parse_options(req, body.get("options"))


def _parse_options(req: CompletionRequest, options: Any) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise ApiError(400, "json: cannot unmarshal options: expected an object")
    for name, default in INT_OPTIONS.items():
        value = options.get(name, default)
        if value is None:
            continue
        fractional = isinstance(value, float) and not value.is_integer()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or fractional:
            raise ApiError(400, f'option "{name}" must be of type integer')
        setattr(req, name, int(value))
    temperature = options.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ApiError(400, 'option "temperature" must be of type number')
    req.temperature = temperature
    stop = options.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, 'option "stop" must be of type array of strings')
    req.stop = [s for s in stop if s]
