"""The Ollama boundary: the only module that speaks HTTP to Ollama.

`OllamaClient` implements `chunkwise.backend.ChatClient` and raises the backend-neutral errors of
`chunkwise.errors` (the tree is drawn there): HTTP statuses and transport failures are translated in
one place, `_error_from_response` and `_request`/`_send_stream`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    IncompleteResponse,
    LLMError,
    ModelNotFound,
    RequestTimeout,
    ServerBusy,
    ServerError,
    ServerUnavailable,
)

DEFAULT_PORT = 11434
JSON_HEADERS = {"Content-Type": "application/json"}


def parse_host(value: str) -> str:
    """Normalise an Ollama host the way Ollama's client reads `OLLAMA_HOST`.

    `host`, `host:port`, `http://host`, `https://host:port/` are accepted; the port defaults to
    11434 for a bare host and to the scheme's port for an explicit scheme. Anything but http(s)
    is refused (a host such as `file:///etc/passwd` must never reach httpx).
    """
    raw = value.strip()
    if not raw:
        raise ConfigError("Ollama host is empty; set --host or OLLAMA_HOST, e.g. http://127.0.0.1:11434")
    if "://" not in raw:
        raw = f"http://{raw}"
        default_port: int | None = DEFAULT_PORT
    else:
        default_port = None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"Ollama host {value!r} uses scheme {parts.scheme!r}; only http and https are allowed")
    if not parts.hostname:
        raise ConfigError(f"Ollama host {value!r} has no host name; write it as http://HOST:PORT")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"Ollama host {value!r} has an invalid port; write it as http://HOST:PORT") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{port}" if port else host
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{netloc}{path}"


def _error_from_response(status: int, message: str, model: str) -> LLMError:
    if status == 404:
        return ModelNotFound(f"{message} (status 404); pull it with: ollama pull {model}", status)
    if status == 400 and ("exceeds the context length" in message or "longer than the context" in message
                          or "exceeds the available context" in message):
        return ContextExceeded(message, status)
    if status == 400:
        return BadRequest(f"{message} (status 400)", status)
    if status == 503:
        return ServerBusy(message, status)
    if status >= 500 or status == 429:
        return ServerError(f"{message} (status {status})", status)
    return BadRequest(f"{message} (status {status})", status)


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or body.decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500]


class OllamaClient:
    """A thread-safe httpx client for one Ollama host.

    Timeouts live here, not in Prefect: a Prefect task timeout cannot interrupt a thread blocked
    on a socket (Prefect 3.9 `task_engine.py` warns that a thread timeout "cannot interrupt blocking
operations like `time.sleep()`, network requests"). With streaming (the default) `read_timeout_s` bounds the
    silence between two lines, so a stalled server is detected without capping long generations.
    """

    def __init__(
        self,
        host: str,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 900.0,
        max_connections: int = 16,
        stream: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = parse_host(host)
        self.stream = stream
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=60.0, pool=None)
        self._http = httpx.Client(
            base_url=self.host,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": f"chunkwise/{__version__}"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OllamaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata -----------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """`GET /api/version`; the dict also says whether the server is chunkwise's simulator."""
        response = self._request("GET", "/api/version", model="")
        data = response.json()
        data["is_simulator"] = data.get("simulator") == "chunkwise" or "x-ollama-simulator" in response.headers
        return data

    def show(self, model: str) -> dict[str, Any]:
        """`POST /api/show`: details, model_info (architecture numbers) and parameters."""
        return self._request("POST", "/api/show", model=model, json={"model": model}).json()

    def tags(self) -> list[dict[str, Any]]:
        """`GET /api/tags`: the installed models with their digests."""
        return list(self._request("GET", "/api/tags", model="").json().get("models") or [])

    def ps(self) -> list[dict[str, Any]]:
        """`GET /api/ps`: the loaded models with size, size_vram and context_length."""
        return list(self._request("GET", "/api/ps", model="").json().get("models") or [])

    # -- generation ---------------------------------------------------------------------------

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
        """`POST /api/chat`; raises an `LLMError` subclass for anything but a complete answer."""
        body: dict[str, Any] = {"model": model, "messages": messages, "options": options, "stream": self.stream}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if format is not None:
            body["format"] = format
        if truncate is not None:
            body["truncate"] = truncate
        started = time.perf_counter_ns()
        try:
            if self.stream:
                final, content = self._chat_stream(body, model)
            else:
                final = self._request("POST", "/api/chat", model=model, json=body).json()
                content = (final.get("message") or {}).get("content") or ""
        except httpx.TimeoutException as exc:
            raise RequestTimeout(f"no answer from {self.host} within the timeout ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise IncompleteResponse(f"connection to {self.host} broke mid-response: {exc}") from None
        if not final.get("done") or "eval_count" not in final and "prompt_eval_count" not in final:
            raise IncompleteResponse(f"{self.host} ended the answer without done: true and metrics")
        return ChatResult(
            content=content,
            done_reason=str(final.get("done_reason") or ""),
            prompt_eval_count=int(final.get("prompt_eval_count", 0)),
            eval_count=int(final.get("eval_count", 0)),
            total_duration=int(final.get("total_duration", 0)),
            load_duration=int(final.get("load_duration", 0)),
            prompt_eval_duration=int(final.get("prompt_eval_duration", 0)),
            eval_duration=int(final.get("eval_duration", 0)),
            wall_ns=time.perf_counter_ns() - started,
        )

    def _chat_stream(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], str]:
        """Read NDJSON lines (one per token from Ollama) from raw bytes: splitting and decoding them
        here costs a fraction of httpx's text line iterator, which matters at thousands of lines/s."""
        pieces: list[str] = []
        last: dict[str, Any] = {}
        pending = b""
        with self._send_stream("POST", "/api/chat", model=model, content=orjson.dumps(body),
                               headers=JSON_HEADERS) as response:
            for data in response.iter_bytes():
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if line:
                        last = self._stream_line(line, pieces, response.status_code)
            if pending.strip():
                last = self._stream_line(pending, pieces, response.status_code)
            # No break on done: reading the stream to its end returns the connection to the pool
            # (closing a half-read response would cost a new TCP connection per request).
        return last, "".join(pieces)

    def _stream_line(self, line: bytes, pieces: list[str], status: int) -> dict[str, Any]:
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise IncompleteResponse(f"{self.host} sent a line that is not JSON: {line[:120]!r}") from None
        if "error" in item:  # an error after the first chunk arrives inside a 200 stream
            raise ServerError(f"{item['error']} (in stream)", status)
        message = item.get("message")
        if message:
            pieces.append(message.get("content") or "")
        return item

    # -- transport ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, model: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServerUnavailable(self._unreachable(exc)) from None
        except httpx.ConnectTimeout as exc:
            raise ServerUnavailable(self._unreachable(exc)) from None
        except httpx.TimeoutException as exc:
            raise RequestTimeout(f"no answer from {self.host} within the timeout ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise IncompleteResponse(f"connection to {self.host} broke mid-response: {exc}") from None
        if response.status_code >= 400:
            raise _error_from_response(response.status_code, _error_text(response.content), model)
        return response

    @contextmanager
    def _send_stream(self, method: str, path: str, *, model: str, **kwargs: Any) -> Iterator[httpx.Response]:
        request = self._http.build_request(method, path, **kwargs)
        try:
            response = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnavailable(self._unreachable(exc)) from None
        try:
            if response.status_code >= 400:
                raise _error_from_response(response.status_code, _error_text(response.read()), model)
            yield response
        finally:
            response.close()

    def _unreachable(self, exc: Exception) -> str:
        return (
            f"cannot reach Ollama at {self.host} ({type(exc).__name__}: {exc}); start it with `ollama serve` "
            "(or set --host / OLLAMA_HOST), or try a dry run against the simulator: `chunkwise sim`"
        )
