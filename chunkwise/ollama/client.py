"""The Ollama boundary: the only module that speaks HTTP to Ollama.

`OllamaClient` implements `chunkwise.backend.ChatClient` and raises the backend-neutral errors of
`chunkwise.errors` (the tree is drawn there): HTTP statuses and transport failures are translated in
one place: statuses in `_error_from_response`, transport failures in `chunkwise.transport.HttpBoundary`
(shared with the OpenAI-compatible client).
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

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
)
from chunkwise.transport import HttpBoundary

DEFAULT_PORT = 11434
JSON_HEADERS = {"Content-Type": "application/json"}


#: The default ports Ollama's `envconfig.Host()` uses per scheme (envconfig/config.go, v0.33.0-rc2).
_SCHEME_PORTS = {"http": 80, "https": 443}


def parse_host(value: str) -> str:
    """Normalise an Ollama host the way Ollama's own client reads `OLLAMA_HOST`.

    Mirrors `envconfig.Host()` (ollama/ollama envconfig/config.go and its TestHost table, tag
    v0.33.0-rc2): surrounding spaces and quotes are stripped; no scheme means http on 11434
    (`host`, `host:port`, `:port` = this machine, `[::1]`, bare `::1`); `http://` defaults to
    port 80 and `https://` to 443; a path (a reverse proxy prefix) is kept; bare `ollama.com`
    means `https://ollama.com:443`.

    Refused with a message (Ollama would guess instead): a scheme other than http/https (a host
    such as `file:///etc/passwd` must never reach httpx), an empty host, and a port that is not a
    number in 1-65535 (Ollama logs a warning and silently uses the default port, which would send
    a typo'd port's requests to another server).
    """
    raw = value.strip().strip("\"'").strip()
    if not raw:
        raise ConfigError("Ollama host is empty; set --host or OLLAMA_HOST, e.g. http://127.0.0.1:11434")
    scheme, sep, hostport = raw.partition("://")
    if not sep:
        scheme, hostport, default_port = "http", raw, DEFAULT_PORT
        if raw == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme.lower() in _SCHEME_PORTS:
        scheme = scheme.lower()
        default_port = _SCHEME_PORTS[scheme]
    else:
        raise ConfigError(f"Ollama host {value!r} uses scheme {scheme!r}; only http and https are allowed")
    hostport, _, path = hostport.partition("/")
    host, port_text = _split_host_port(hostport, value)
    if not host:
        if port_text is None:
            raise ConfigError(f"Ollama host {value!r} has no host name; write it as http://HOST:PORT")
        host = "127.0.0.1"  # Go dials ":port" on the local system
    port = default_port
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ConfigError(f"Ollama host {value!r} has an invalid port {port_text!r}; write it as http://HOST:PORT "
                              "with a port from 1 to 65535")
        port = int(port_text)
    if ":" in host:
        host = f"[{host}]"
    path = path.rstrip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def _split_host_port(hostport: str, value: str) -> tuple[str, str | None]:
    """`host[:port]`, `[v6][:port]` or a bare IPv6 address -> (host, port or None)."""
    if hostport.startswith("["):
        inside, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"Ollama host {value!r} is not a valid address; write IPv6 as http://[::1]:11434")
        return inside, (rest[1:] if rest else None)
    if hostport.count(":") > 1:  # a bare IPv6 address such as ::1 has no port
        try:
            return str(ipaddress.IPv6Address(hostport)), None
        except ValueError:
            raise ConfigError(
                f"Ollama host {value!r} is not a valid address; write IPv6 as http://[::1]:11434") from None
    host, colon, port = hostport.partition(":")
    return host, (port if colon else None)


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


class OllamaClient(HttpBoundary):
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
        data: dict[str, Any] = response.json()
        data["is_simulator"] = data.get("simulator") == "chunkwise" or "x-ollama-simulator" in response.headers
        return data

    def show(self, model: str) -> dict[str, Any]:
        """`POST /api/show` with `verbose: true`: details, capabilities, model_info (architecture
        numbers) and parameters. Without `verbose` Ollama replaces every model_info array longer
        than 5 with `[]` (server/routes.go `GetModelInfo`, v0.33.0-rc2), so per-layer lists such as
        `head_count_kv` would arrive empty."""
        shown: dict[str, Any] = self._request(
            "POST", "/api/show", model=model, json={"model": model, "verbose": True}
        ).json()
        return shown

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
        shift: bool | None = None,
        think: bool | str | None = None,
    ) -> ChatResult:
        """`POST /api/chat`; raises an `LLMError` subclass for anything but a complete answer.

        `truncate`/`shift` are `ChatRequest` fields since Ollama v0.12.6 (api/types.go); older
        servers ignore them (gin's JSON binding drops unknown fields). `think` is a bool or a
        level "low" | "medium" | "high" (api/types.go `ThinkValue`); None leaves it out, which a
        thinking-capable model reads as `true` since v0.12.4 (server/routes.go ChatHandler).
        """
        body: dict[str, Any] = {"model": model, "messages": messages, "options": options, "stream": self.stream}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if format is not None:
            body["format"] = format
        if truncate is not None:
            body["truncate"] = truncate
        if shift is not None:
            body["shift"] = shift
        if think is not None:
            body["think"] = think
        started = time.perf_counter_ns()
        try:
            if self.stream:
                final, content, thinking = self._chat_stream(body, model)
            else:
                final = self._request("POST", "/api/chat", model=model, json=body).json()
                if "error" in final:
                    raise ServerError(f"{final['error']} (in answer)", 200)
                message = final.get("message") or {}
                content, thinking = message.get("content") or "", message.get("thinking") or ""
        except httpx.TimeoutException as exc:
            raise RequestTimeout(f"no answer from {self.host} within the timeout ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise IncompleteResponse(f"connection to {self.host} broke mid-response: {exc}") from None
        if not final.get("done") or ("eval_count" not in final and "prompt_eval_count" not in final):
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
            thinking=thinking,
        )

    def _chat_stream(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], str, str]:
        """Read NDJSON lines (one per token from Ollama) from raw bytes: splitting and decoding them
        here costs a fraction of httpx's text line iterator, which matters at thousands of lines/s."""
        pieces: list[str] = []
        thoughts: list[str] = []
        last: dict[str, Any] = {}
        pending = b""
        with self._send_stream("POST", "/api/chat", model=model, content=orjson.dumps(body),
                               headers=JSON_HEADERS) as response:
            for data in response.iter_bytes():
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if line:
                        last = self._stream_line(line, pieces, thoughts, response.status_code)
            if pending.strip():
                last = self._stream_line(pending, pieces, thoughts, response.status_code)
            # No break on done: reading the stream to its end returns the connection to the pool
            # (closing a half-read response would cost a new TCP connection per request).
        return last, "".join(pieces), "".join(thoughts)

    def _stream_line(self, line: bytes, pieces: list[str], thoughts: list[str], status: int) -> dict[str, Any]:
        try:
            item: dict[str, Any] = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise IncompleteResponse(f"{self.host} sent a line that is not JSON: {line[:120]!r}") from None
        if "error" in item:  # an error after the first chunk arrives inside a 200 stream
            raise ServerError(f"{item['error']} (in stream)", status)
        message = item.get("message")
        if message:
            pieces.append(message.get("content") or "")
            if message.get("thinking"):
                thoughts.append(message["thinking"])
        return item

    # -- transport ----------------------------------------------------------------------------

    def _error_for(self, status: int, body: bytes, model: str) -> LLMError:
        return _error_from_response(status, _error_text(body), model)

    def _unreachable(self, exc: Exception) -> str:
        return (
            f"cannot reach Ollama at {self.host} ({type(exc).__name__}: {exc}); start it with `ollama serve` "
            "(or set --host / OLLAMA_HOST), or try a dry run against the simulator: `chunkwise sim`"
        )
