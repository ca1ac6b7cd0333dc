"""The OpenAI-compatible boundary: the only module that speaks HTTP to an OpenAI-style server
(llama.cpp's llama-server, vLLM, SGLang, LM Studio, Ollama's `/v1`, OpenAI itself).

`POST /v1/chat/completions`, streamed as server-sent events with `stream_options.include_usage`
(a last chunk with `choices: []` and `usage`), so token counts are the server's own. Only portable
OpenAI fields are sent (`max_tokens`, `temperature`, `seed`, `response_format`): OpenAI itself
answers 400 to an unknown field, and the one llama.cpp extension that matters to a batch,
`cache_prompt`, already defaults to true (llama.cpp tools/server/README.md, "cache_prompt ...
Default: true"; llama-cpp-python 0.3.36 vendor/llama.cpp).

Errors are the backend-neutral tree of `chunkwise.errors` (see `_error_from_response`):

    400 with llama.cpp `exceed_context_size_error`, OpenAI/llama-cpp-python `context_length_exceeded`
        or vLLM "maximum context length"             -> ContextExceeded (the request's failure, recorded)
    401/403 (bad or missing API key), 429 insufficient_quota  -> FatalError (stop the run)
    404                                               -> ModelNotFound
    other 4xx                                         -> BadRequest
    429, 5xx, 503 (llama.cpp `unavailable_error` while loading) -> ServerError / ServerBusy (retried)
    an error object inside a 200 stream               -> ContextExceeded or ServerError
    a stream without `[DONE]` or without a finish_reason        -> IncompleteResponse (retried)

The API key (settings `api_key`, env CHUNKWISE_API_KEY) is sent as `Authorization: Bearer` and
kept only in the httpx client's headers: never in a message, a repr, a log line or a run file.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from chunkwise import __version__
from chunkwise.backend import ChatResult
from chunkwise.errors import (
    BadRequest,
    ConfigError,
    ContextExceeded,
    FatalError,
    IncompleteResponse,
    LLMError,
    ModelNotFound,
    RequestTimeout,
    ServerBusy,
    ServerError,
)
from chunkwise.transport import HttpBoundary

#: llama-server's default port (tools/server/README.md `--port`, default 8080).
DEFAULT_PORT = 8080
JSON_HEADERS = {"Content-Type": "application/json"}
CHAT_PATH = "/v1/chat/completions"
#: Idle pooled connections are dropped after this many seconds, before the server drops them: llama-server
#: closes an idle keep-alive connection after 5 s (cpp-httplib CPPHTTPLIB_KEEPALIVE_TIMEOUT_SECOND, vendored
#: in llama-cpp-python 0.3.36), as uvicorn (vLLM, SGLang) does by default; httpx's own default is also 5 s,
#: and reusing a connection the server is closing fails with "Server disconnected without sending a response".
KEEPALIVE_EXPIRY_S = 2.0
#: Phrases by which each server says a prompt does not fit its context (all HTTP 400).
CONTEXT_TYPES = ("exceed_context_size_error",)  # llama.cpp server-common.cpp format_error_response
CONTEXT_CODES = ("context_length_exceeded",)  # OpenAI; llama-cpp-python 0.3.36
CONTEXT_PHRASES = ("maximum context length", "exceeds the available context size")  # vLLM; llama.cpp


def parse_base_url(value: str) -> str:
    """Normalise an OpenAI-compatible base URL: `host:port`, `http://host:port` or the OpenAI SDK's
    `http://host:port/v1` (the `/v1` is dropped: paths here carry it). A bare host gets port 8080,
    llama-server's default. Anything but http(s) is refused."""
    raw = value.strip()
    if not raw:
        raise ConfigError("OpenAI-compatible server URL is empty; set --host or CHUNKWISE_OPENAI_HOST, "
                          "e.g. http://127.0.0.1:8080")
    default_port = DEFAULT_PORT if "://" not in raw else None
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"server URL {value!r} uses scheme {parts.scheme!r}; only http and https are allowed")
    if not parts.hostname:
        raise ConfigError(f"server URL {value!r} has no host name; write it as http://HOST:PORT")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"server URL {value!r} has an invalid port; write it as http://HOST:PORT") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{port}" if port else host
    path = parts.path.rstrip("/").removesuffix("/v1")
    return f"{parts.scheme}://{netloc}{path}"


def _error_fields(body: bytes) -> dict[str, Any]:
    """The error object of a response body, whatever its shape: `{"error": {...}}` (OpenAI,
    llama.cpp, vLLM >= 0.6), `{"error": "text"}`, or vLLM's older bare `{"object": "error", ...}`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body.decode("utf-8", "replace")[:500]}
    if not isinstance(data, dict):
        return {"message": str(data)[:500]}
    error = data.get("error", data)
    if isinstance(error, dict):
        return error
    return {"message": str(error)}


def _is_context_error(fields: dict[str, Any]) -> bool:
    message = str(fields.get("message") or "").lower()
    return (fields.get("type") in CONTEXT_TYPES or fields.get("code") in CONTEXT_CODES
            or any(phrase in message for phrase in CONTEXT_PHRASES))


def _context_message(fields: dict[str, Any]) -> str:
    message = str(fields.get("message") or "the prompt does not fit the server's context")
    if "n_prompt_tokens" in fields and "n_ctx" in fields:  # llama.cpp adds its own numbers
        return (f"prompt of {fields['n_prompt_tokens']} tokens exceeds the server's context of {fields['n_ctx']} "
                f"tokens per slot ({message})")
    return message


def _error_from_response(status: int, fields: dict[str, Any], model: str) -> LLMError:
    message = str(fields.get("message") or f"HTTP {status}")
    if _is_context_error(fields):
        return ContextExceeded(_context_message(fields), status)
    if status in (401, 403):
        return FatalError(f"{message} (status {status}); set the server's API key in CHUNKWISE_API_KEY", status)
    if status == 404:
        return ModelNotFound(f"{message} (status 404); check that the server serves model {model!r} "
                             "(GET /v1/models lists them) and that --host is the server's base URL", status)
    if status == 429 and fields.get("code") == "insufficient_quota":
        return FatalError(f"{message} (status 429); the account's quota is used up", status)
    if status == 503:
        return ServerBusy(f"{message} (status 503)", status)
    if status >= 500 or status == 429:
        return ServerError(f"{message} (status {status})", status)
    return BadRequest(f"{message} (status {status})", status)


def response_format(schema: dict[str, Any] | str) -> dict[str, Any]:
    """OpenAI's structured-output field for a JSON schema (`"json"` means any JSON object)."""
    if schema == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


class _StreamState:
    """What the stream has said so far: the text, the finish reason, the usage, llama.cpp timings."""

    __slots__ = ("done", "finish_reason", "pieces", "timings", "usage")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.done = False


class OpenAIClient(HttpBoundary):
    """A thread-safe httpx client for one OpenAI-compatible server.

    `read_timeout_s` bounds the silence between two stream events (as for Ollama), so a stalled
    server is detected without capping long generations.
    """

    def __init__(
        self,
        host: str,
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 900.0,
        max_connections: int = 16,
        stream: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = parse_base_url(host)
        self.stream = stream
        headers = {"User-Agent": f"chunkwise/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=60.0, pool=None)
        self._http = httpx.Client(
            base_url=self.host,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                                keepalive_expiry=KEEPALIVE_EXPIRY_S),
            headers=headers,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"OpenAIClient({self.host!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata -----------------------------------------------------------------------------

    def models(self) -> list[str]:
        """`GET /v1/models`: the ids of the models the server serves."""
        data = self._request("GET", "/v1/models", model="").json()
        return [str(m.get("id")) for m in data.get("data") or [] if isinstance(m, dict) and m.get("id")]

    def props(self) -> dict[str, Any] | None:
        """llama.cpp's `GET /props` (tools/server/README.md): `default_generation_settings.n_ctx` is
        the context per slot, `build_info` the server build; None for servers without it."""
        try:
            data = self._request("GET", "/props", model="").json()
        except (LLMError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def slot_context(self) -> int | None:
        """Tokens of context per slot, from llama.cpp's `/props`; None for other servers."""
        n_ctx = ((self.props() or {}).get("default_generation_settings") or {}).get("n_ctx")
        return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None

    # -- generation ---------------------------------------------------------------------------

    def body(self, model: str, messages: list[dict[str, str]], options: dict[str, Any],
             format: dict[str, Any] | str | None) -> dict[str, Any]:
        """The request body. `options` uses Ollama's names (the run's one vocabulary): num_predict
        becomes max_tokens; num_ctx is the server's own setting and is not sent."""
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": self.stream}
        if options.get("num_predict") is not None:
            body["max_tokens"] = int(options["num_predict"])
        for name in ("temperature", "seed"):
            if options.get(name) is not None:
                body[name] = options[name]
        if format is not None:
            body["response_format"] = response_format(format)
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        options: dict[str, Any],
        keep_alive: str | int | None = None,
        format: dict[str, Any] | str | None = None,
        truncate: bool | None = None,
    ) -> ChatResult:
        """`POST /v1/chat/completions`; raises an `LLMError` subclass for anything but a complete
        answer. `keep_alive` and `truncate` are Ollama's and have no OpenAI equivalent: ignored
        (these servers keep the model loaded and refuse an over-long prompt on their own)."""
        body = self.body(model, messages, options, format)
        started = time.perf_counter_ns()
        try:
            state = self._chat_stream(body, model) if self.stream else self._chat_once(body, model)
        except httpx.TimeoutException as exc:
            raise RequestTimeout(f"no answer from {self.host} within the timeout ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise IncompleteResponse(f"connection to {self.host} broke mid-response: {exc}") from None
        return self._result(state, time.perf_counter_ns() - started)

    def _result(self, state: _StreamState, wall_ns: int) -> ChatResult:
        if state.finish_reason is None:
            raise IncompleteResponse(f"{self.host} ended the answer without a finish_reason")
        if state.usage is None:
            raise BadRequest(
                f"{self.host} sent no token usage (stream_options.include_usage is not supported by this server); "
                "chunkwise needs the server's token counts: use a server that reports usage (llama-server, vLLM, "
                "Ollama) or set CHUNKWISE_OPENAI_STREAM=false"
            )
        timings = state.timings or {}
        usage = state.usage
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return ChatResult(
            content="".join(state.pieces),
            done_reason=state.finish_reason,
            prompt_eval_count=int(usage.get("prompt_tokens") or 0),
            eval_count=int(usage.get("completion_tokens") or 0),
            # llama.cpp's `timings` (milliseconds) where present; other servers report none
            prompt_eval_duration=int(float(timings.get("prompt_ms") or 0) * 1e6),
            eval_duration=int(float(timings.get("predicted_ms") or 0) * 1e6),
            total_duration=int((float(timings.get("prompt_ms") or 0) + float(timings.get("predicted_ms") or 0)) * 1e6),
            wall_ns=wall_ns,
            extra={"cached_tokens": int(cached)} if isinstance(cached, int) else {},
        )

    def _chat_once(self, body: dict[str, Any], model: str) -> _StreamState:
        data = self._request("POST", CHAT_PATH, model=model, content=orjson.dumps(body), headers=JSON_HEADERS).json()
        state = _StreamState()
        choice = (data.get("choices") or [{}])[0]
        state.pieces.append((choice.get("message") or {}).get("content") or "")
        state.finish_reason = choice.get("finish_reason")
        state.usage = data.get("usage")
        state.timings = data.get("timings")
        state.done = True
        return state

    def _chat_stream(self, body: dict[str, Any], model: str) -> _StreamState:
        """Read server-sent events from raw bytes (as the Ollama client reads NDJSON): `data: {...}`
        lines, `data: [DONE]` at the end; blank lines, `:` comments (llama.cpp's keep-alive pings) and
        `event:`/`id:` fields carry nothing here."""
        state = _StreamState()
        pending = b""
        with self._send_stream("POST", CHAT_PATH, model=model, content=orjson.dumps(body),
                               headers=JSON_HEADERS) as response:
            for data in response.iter_bytes():
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    self._event_line(line, state, model)
            if pending.strip():
                self._event_line(pending, state, model)
        if not state.done:
            raise IncompleteResponse(f"{self.host} ended the stream without `data: [DONE]`")
        return state

    def _event_line(self, line: bytes, state: _StreamState, model: str) -> None:
        line = line.rstrip(b"\r")
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            state.done = True
            return
        try:
            item = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise IncompleteResponse(f"{self.host} sent an event that is not JSON: {payload[:120]!r}") from None
        if "error" in item:  # an error after the stream started arrives as an event of a 200 response
            fields = item["error"] if isinstance(item["error"], dict) else {"message": str(item["error"])}
            if _is_context_error(fields):
                raise ContextExceeded(_context_message(fields), 200)
            raise ServerError(f"{fields.get('message') or fields} (in stream)", 200)
        for choice in item.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                state.pieces.append(content)
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]
        if item.get("usage"):
            state.usage = item["usage"]
        if item.get("timings"):
            state.timings = item["timings"]

    # -- transport ----------------------------------------------------------------------------

    def _error_for(self, status: int, body: bytes, model: str) -> LLMError:
        return _error_from_response(status, _error_fields(body), model)

    def _unreachable(self, exc: Exception) -> str:
        return (
            f"cannot reach the OpenAI-compatible server at {self.host} ({type(exc).__name__}: {exc}); start it "
            "(e.g. `chunkwise engine`) or set --host / CHUNKWISE_OPENAI_HOST"
        )
