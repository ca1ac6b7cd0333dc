"""The OpenAI-compatible boundary: the only module that speaks HTTP to an OpenAI-style server
(llama.cpp's llama-server, vLLM, SGLang, LM Studio, Ollama's `/v1`, OpenAI itself).

`POST /v1/chat/completions`, streamed as server-sent events with `stream_options.include_usage`,
so token counts are the server's own. Its parts, one concern each: the base URL (`urls`), the
request body (`request`), reading the answer (`stream`), and what an error response means
(`failures`, onto the one error tree of `chunkwise.errors`); the HTTP plumbing both boundaries
share is `chunkwise.transport.HttpBoundary`.

The API key (settings `api_key`, env CHUNKWISE_API_KEY) is sent as `Authorization: Bearer` and
kept only in the httpx client's headers: never in a message, a repr, a log line or a run file. A
server that repeats the key in an error body (some answer a wrong key with "Incorrect API key
provided: <key>") has it replaced before the body becomes an error message.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from chunkwise.backend import ChatRequest, ChatResult
from chunkwise.errors import IncompleteResponse, LLMError
from chunkwise.openai.failures import error_fields, error_from_response
from chunkwise.openai.request import chat_body
from chunkwise.openai.stream import StreamState, chat_result, event_line, whole_answer
from chunkwise.openai.urls import DEFAULT_PORT, parse_base_url
from chunkwise.transport import HttpBoundary

__all__ = ["CHAT_PATH", "DEFAULT_PORT", "OpenAIClient", "parse_base_url"]

JSON_HEADERS = {"Content-Type": "application/json"}
CHAT_PATH = "/v1/chat/completions"
#: Idle pooled connections are dropped after this many seconds, before the server drops them: llama-server
#: closes an idle keep-alive connection after 5 s (cpp-httplib CPPHTTPLIB_KEEPALIVE_TIMEOUT_SECOND, vendored
#: in llama-cpp-python 0.3.36), as uvicorn (vLLM, SGLang) does by default; httpx's own default is also 5 s,
#: and reusing a connection the server is closing fails with "Server disconnected without sending a response".
KEEPALIVE_EXPIRY_S = 2.0


class OpenAIClient(HttpBoundary):
    """A thread-safe httpx client for one OpenAI-compatible server. `read_timeout_s` bounds the silence
    between two stream events (as for Ollama), so a stalled server is detected without capping long
    generations (the rest is `chunkwise.transport.HttpBoundary`'s)."""

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
        super().__init__(parse_base_url(host), connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                         max_connections=max_connections,
                         headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
                         keepalive_expiry_s=KEEPALIVE_EXPIRY_S, transport=transport)
        self.stream = stream
        #: Cut out of error bodies (see the module docstring).
        self._key = api_key.encode("utf-8") if api_key else None

    def __repr__(self) -> str:
        return f"OpenAIClient({self.host!r})"

    # -- metadata -----------------------------------------------------------------------------

    def models(self) -> list[str]:
        """`GET /v1/models`: the ids of the models the server serves."""
        data = self._request("GET", "/v1/models", model="").json()
        return [str(m.get("id")) for m in data.get("data") or [] if isinstance(m, dict) and m.get("id")]

    def props(self) -> dict[str, Any] | None:
        """llama.cpp's `GET /props` (tools/server/README.md): `default_generation_settings.n_ctx` is
        the context per slot, `build_info` the server build; None for servers without it."""
        return self.optional_json("/props")

    def optional_json(self, path: str) -> dict[str, Any] | None:
        """`GET path` as a JSON object; None when the server has no such endpoint, cannot be asked or
        answers anything else (a server's own endpoints beside the OpenAI API: `chunkwise.openai.slots`)."""
        try:
            data = self._request("GET", path, model="").json()
        except (LLMError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def slot_context(self) -> int | None:
        """Tokens of context per slot, from llama.cpp's `/props`; None for other servers."""
        n_ctx = ((self.props() or {}).get("default_generation_settings") or {}).get("n_ctx")
        return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None

    # -- generation ---------------------------------------------------------------------------

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The request body (`chunkwise.openai.request.chat_body`), streamed if this client streams."""
        return chat_body(request, stream=self.stream)

    def chat(self, request: ChatRequest) -> ChatResult:
        """`POST /v1/chat/completions`; raises an `LLMError` subclass for anything but a complete answer."""
        body = self.body(request)
        started = time.perf_counter_ns()
        with self._mapped():
            state = (self._chat_stream(body, request.model) if self.stream
                     else self._chat_once(body, request.model))
        return chat_result(state, time.perf_counter_ns() - started, self.host)

    def _chat_once(self, body: dict[str, Any], model: str) -> StreamState:
        return whole_answer(self._request("POST", CHAT_PATH, model=model, content=orjson.dumps(body),
                                          headers=JSON_HEADERS).json())

    def _chat_stream(self, body: dict[str, Any], model: str) -> StreamState:
        """Read server-sent events from raw bytes (as the Ollama client reads NDJSON): `data: {...}`
        lines, `data: [DONE]` at the end; blank lines, `:` comments (llama.cpp's keep-alive pings) and
        `event:`/`id:` fields carry nothing here."""
        state = StreamState()
        pending = b""
        with self._send_stream("POST", CHAT_PATH, model=model, content=orjson.dumps(body),
                               headers=JSON_HEADERS) as response:
            for data in response.iter_bytes():
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    event_line(line, state, self.host)
            if pending.strip():
                event_line(pending, state, self.host)
        if not state.done:
            raise IncompleteResponse(f"{self.host} ended the stream without `data: [DONE]`")
        return state

    # -- transport ----------------------------------------------------------------------------

    def _error_for(self, status: int, body: bytes, model: str) -> LLMError:
        if self._key:
            body = body.replace(self._key, b"[the API key]")
        return error_from_response(status, error_fields(body), model)

    def _unreachable(self, exc: Exception) -> str:
        return (
            f"cannot reach the OpenAI-compatible server at {self.host} ({type(exc).__name__}: {exc}); start it "
            "(e.g. `chunkwise engine`) or set --host / CHUNKWISE_OPENAI_HOST"
        )
