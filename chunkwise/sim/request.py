"""Parsing and validating /api/chat and /api/generate bodies into one `CompletionRequest`.

Errors are `ApiError(status, message)` with Ollama's wording where the research names it
(`model is required`, `model 'X' not found`, Go's duration errors for keep_alive, `"X" does not
support thinking`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chunkwise.sim.fingerprint import chat_fingerprint, generate_fingerprint
from chunkwise.sim.keepalive import DurationError, parse_keep_alive
from chunkwise.sim.profiles import ModelProfile, resolve

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


def parse_rest(req: CompletionRequest, default_keep_alive_s: float) -> None:
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
        setattr(req, name, value is not False)
    think = body.get("think")
    if think not in (None, False, "", "false"):
        raise ApiError(400, f'"{req.model}" does not support thinking')
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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
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
