"""Parsing and validating /api/chat and /api/generate bodies into one `CompletionRequest`.

In Ollama's order (`v0.24.0:server/routes.go:2178-2380` chat, `:195-430` generate), each step with its
status: the body is bound to the Go struct (400 with encoding/json's text, `gojson.py`; `keep_alive`
and `think` are checked by their own UnmarshalJSON here, `api/types.go`), the model is required (400)
and must exist (404 `model 'X' not found`); an empty prompt with `keep_alive: 0` unloads at once
(completion.py); `think` must suit the model (400 `"<model as sent>" does not support thinking`,
`routes.go:2366`); then the options are read (`parse_options`): a value of the wrong type is a **500**
with `Options.FromMap`'s text (`api/types.go:1017-1062`, reached through `scheduleRunner` and
`handleScheduleError`'s default case, `routes.go:2715-2727`), a fractional number for an integer option
is truncated, unknown options are ignored. `format` is checked only when the runner starts the
completion (completion.py).

`think` (`api/types.go:1098-1160`): true/false or one of "high", "medium", "low", "max"; anything else
is a 400 with ThinkValue.UnmarshalJSON's message. On a thinking-capable model an unset `think` means
true since v0.12.4; a truthy `think` on any other model is the 400 above. gpt-oss cannot stop thinking
(`v0.33.0-rc2:docs/capabilities/thinking.mdx:12`). `truncate` and `shift` are read from v0.12.6 on (era.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chunkwise.harness.sim.era import Era
from chunkwise.harness.sim.fingerprint import chat_fingerprint, generate_fingerprint
from chunkwise.harness.sim.gojson import CHAT_FIELDS, GENERATE_FIELDS, BindError, bind, decode
from chunkwise.harness.sim.keepalive import DurationError, parse_keep_alive
from chunkwise.harness.sim.profiles import ModelProfile, resolve

THINK_LEVELS = ("high", "medium", "low", "max")
INVALID_THINK = 'invalid think value: {} (must be "high", "medium", "low", "max", true, or false)'
THINK_TYPE = 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'
INVALID_FORMAT = 'invalid format: {}; expected "json" or a valid JSON Schema object'

#: Every option `api.Options` knows and its Go kind (`v0.24.0:api/types.go:567-603`).
OPTION_KINDS: dict[str, str] = {
    **dict.fromkeys(("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "seed", "num_predict",
                     "top_k", "repeat_last_n"), "int"),
    **dict.fromkeys(("top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                     "frequency_penalty"), "float32"),
    "use_mmap": "bool", "stop": "array",
}
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
    #: `format` when it is neither "json" nor a schema: the completion fails with INVALID_FORMAT.
    bad_format: str | None = None
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
    """A JSON object body (the simulator's own endpoints), or ApiError 400."""
    try:
        body = decode(raw)
    except BindError as exc:
        raise ApiError(400, str(exc)) from None
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {type(body).__name__} into a request object")
    return body


def _check_keep_alive(value: Any) -> None:
    try:
        parse_keep_alive(value, 0.0)
    except DurationError as exc:
        raise BindError(str(exc)) from None


def _check_think(value: Any) -> None:
    if isinstance(value, bool):
        return
    if not isinstance(value, str):
        raise BindError(THINK_TYPE)
    if value not in THINK_LEVELS:
        raise BindError(INVALID_THINK.format(json.dumps(value)))


CUSTOM = {"keep_alive": _check_keep_alive, "think": _check_think}


def parse_head(kind: str, raw: bytes) -> CompletionRequest:
    """Steps that must succeed before the request has a fingerprint: the body binds, a model is named."""
    try:
        body = bind(decode(raw), "ChatRequest" if kind == "chat" else "GenerateRequest",
                    CHAT_FIELDS if kind == "chat" else GENERATE_FIELDS, CUSTOM)
    except BindError as exc:
        raise ApiError(400, str(exc)) from None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required")
    req = CompletionRequest(kind=kind, model=model, body=body, fingerprint="")
    if kind == "chat":
        req.messages = [m for m in body.get("messages") or [] if m is not None]
        req.fingerprint = chat_fingerprint(model, req.messages)
    else:
        prompt, system = body.get("prompt"), body.get("system")
        req.prompt, req.system, req.raw = prompt or "", system, bool(body.get("raw"))
        req.fingerprint = generate_fingerprint(model, prompt, system)
    return req


def parse_think(body: dict[str, Any], profile: ModelProfile, model: str, era: Era) -> str:
    """The thinking level in force ("" = off), or ApiError 400 for a model that cannot think."""
    value = body.get("think")
    if not profile.thinks:
        if value is True or isinstance(value, str):
            raise ApiError(400, f"{json.dumps(model)} does not support thinking")
        return ""
    if value is None:
        value = era.thinks_by_default
    if value is False:
        return "low" if profile.think_levels_only else ""
    return "medium" if value is True else str(value)


def parse_rest(req: CompletionRequest, default_keep_alive_s: float, era: Era | None = None) -> None:
    """Model lookup (404) and the fields read before the model is scheduled."""
    body = req.body
    req.profile = resolve(req.model)
    if req.profile is None:
        raise ApiError(404, f"model '{req.model}' not found")
    req.keep_alive_s = parse_keep_alive(body.get("keep_alive"), default_keep_alive_s)
    req.keep_alive_given = body.get("keep_alive") is not None
    stream = body.get("stream")
    req.stream = True if stream is None else bool(stream)
    fmt = body.get("format")
    if fmt in (None, ""):
        req.fmt = None
    elif fmt == "json" or isinstance(fmt, dict):
        req.fmt = fmt
    else:  # `llm/server.go:1583-1594`: Go's %q of the raw bytes
        req.bad_format = INVALID_FORMAT.format(json.dumps(json.dumps(fmt, separators=(",", ":"))))
    for name in ("truncate", "shift"):
        if era is None or era.truncate_fields:
            setattr(req, name, body.get(name) is not False)


def parse_options(req: CompletionRequest) -> None:
    """`options` as `Options.FromMap` reads them: a wrong type is ApiError 500 (see the module docstring)."""
    options = req.body.get("options")
    if not options:
        return
    for name, value in options.items():
        kind = OPTION_KINDS.get(name)
        if kind is None or value is None:
            continue
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ApiError(500, f'option "{name}" must be of type integer')
        if kind == "float32" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ApiError(500, f'option "{name}" must be of type float32')
        if kind == "bool" and not isinstance(value, bool):
            raise ApiError(500, f'option "{name}" must be of type boolean')
        if kind == "array":
            if not isinstance(value, list):
                raise ApiError(500, f'option "{name}" must be of type array')
            if not all(isinstance(s, str) for s in value):
                raise ApiError(500, f'option "{name}" must be of an array of strings')
    for name, default in INT_OPTIONS.items():
        value = options.get(name)
        setattr(req, name, default if value is None else int(value))  # Go's int64(float64): toward zero
    temperature = options.get("temperature")
    req.temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    req.stop = [s for s in options.get("stop") or [] if s]
