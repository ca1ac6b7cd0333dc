"""The Ollama boundary: the only module that speaks HTTP to Ollama.

`OllamaClient` implements `chunkwise.backend.ChatClient` and raises the backend-neutral errors of
`chunkwise.errors` (the tree is drawn there): what an error status means here in `_error_from_response`
(its tail is the shared `chunkwise.transport.classify_status`), transport failures in
`chunkwise.transport.map_transport_errors` (shared with the OpenAI-compatible client). What a run asks of
the server beyond chat (version, model, memory) is `chunkwise.ollama.backend`'s.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import orjson

from chunkwise.backend import ChatRequest, ChatResult
from chunkwise.errors import AnswerUnfinished, ContextExceeded, IncompleteResponse, LLMError, ModelNotFound, ServerError
from chunkwise.ollama.urls import DEFAULT_PORT, parse_host
from chunkwise.transport import HttpBoundary, classify_status

__all__ = ["DEFAULT_PORT", "OllamaClient", "parse_host"]

JSON_HEADERS = {"Content-Type": "application/json"}
#: How Ollama words a prompt over the context (HTTP 400), across versions.
CONTEXT_PHRASES = ("exceeds the context length", "longer than the context", "exceeds the available context")


def _unwrap(message: str) -> str:
    """The message inside a JSON error body passed on as Ollama's message: from 0.30 Ollama's engine is
    llama-server, and Ollama hands its error body on as it is (`{"error":{"code":400,"message":"request (N
    tokens) exceeds the available context size (C tokens), ..."}}`); any other message unchanged."""
    if not message.startswith("{"):
        return message
    try:
        inner = json.loads(message).get("error")
    except (ValueError, AttributeError):
        return message
    return str(inner["message"]) if isinstance(inner, dict) and inner.get("message") else message


def _one_line(message: str) -> str:
    """A multi-line server message on one line, each line once (not one already contained in an earlier
    line): from 0.30 Ollama's load errors are every error line llama-server logged, joined by newlines
    (`v0.33.0:llm/status.go` AppendError; an unknown tokenizer is logged twice), and chunkwise's errors are
    one line."""
    kept: list[str] = []
    for line in (line.strip() for line in message.splitlines()):
        if line and not any(line in earlier for earlier in kept):  # a repeat, maybe under a prefix
            kept.append(line)
    return "; ".join(kept)


def _error_from_response(status: int, message: str, model: str) -> LLMError:
    message = _one_line(_unwrap(message))
    if status == 404:
        return ModelNotFound(f"{message} (status 404); pull it with: ollama pull {model}", status)
    if status == 400 and any(phrase in message for phrase in CONTEXT_PHRASES):
        return ContextExceeded(message, status)
    return classify_status(status, message)


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or body.decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500]


def options_of(request: ChatRequest) -> dict[str, Any]:
    """Ollama's `options` for a request: num_ctx always explicit (a change reloads the model)."""
    o = request.options
    options: dict[str, Any] = {"num_ctx": o.context_tokens, "num_predict": o.max_answer_tokens,
                               "temperature": o.temperature, "seed": o.seed}
    if o.top_p is not None:
        options["top_p"] = o.top_p
    if o.stop:
        options["stop"] = list(o.stop)
    return options


class OllamaClient(HttpBoundary):
    """A thread-safe httpx client for one Ollama host. With streaming (the default) `read_timeout_s`
    bounds the silence between two lines, so a stalled server is detected without capping long
    generations (the rest is `chunkwise.transport.HttpBoundary`'s)."""

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
        super().__init__(parse_host(host), connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                         max_connections=max_connections, transport=transport)
        self.stream = stream

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

    def load(self, request: ChatRequest) -> float:
        """Load the model as `request` would (its num_ctx and fields; no messages) and wait until it is loaded:
        `POST /api/chat` with empty `messages` answers `done_reason: "load"` once the scheduler has a runner
        (`v0.24.0:server/routes.go:2372-2392`). Returns the wall seconds; raises an `LLMError` subclass."""
        body = {**self.body(request._replace(messages=[])), "stream": False}
        started = time.perf_counter()
        answer = self._request("POST", "/api/chat", model=request.model, json=body).json()
        if answer.get("done_reason") != "load":
            raise IncompleteResponse(f"{self.host} answered a load request without done_reason 'load': "
                                     f"{str(answer)[:200]}")
        return time.perf_counter() - started

    # -- generation ---------------------------------------------------------------------------

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The `/api/chat` body: the request's neutral options in Ollama's names, its format, and the
        backend's own fields (`extras`: `truncate`, `shift`, `think`, `keep_alive`) as they are."""
        body: dict[str, Any] = {"model": request.model, "messages": request.messages,
                                "options": options_of(request), "stream": self.stream}
        if request.format is not None:
            body["format"] = request.format
        body.update(request.extras)
        return body

    def chat(self, request: ChatRequest) -> ChatResult:
        """`POST /api/chat`; raises an `LLMError` subclass for anything but a complete answer.

        `truncate`/`shift` are `ChatRequest` fields since Ollama v0.12.6 (api/types.go); older
        servers ignore them (gin's JSON binding drops unknown fields). `think` is a bool or a
        level "low" | "medium" | "high" (api/types.go `ThinkValue`); left out, a thinking-capable
        model reads it as `true` since v0.12.4 (server/routes.go ChatHandler).
        """
        return self.chat_body(self.body(request), request.model)

    def chat_body(self, body: dict[str, Any], model: str) -> ChatResult:
        """`chat` with a body already built (`body`), for a caller that must change it on the wire."""
        started = time.perf_counter_ns()
        with self._mapped():
            if self.stream:
                final, content, thinking = self._chat_stream(body, model)
            else:
                final = orjson.loads(self._request("POST", "/api/chat", model=model, content=orjson.dumps(body),
                                                   headers=JSON_HEADERS).content)
                if "error" in final:
                    raise ServerError(f"{final['error']} (in answer)", 200)
                message = final.get("message") or {}
                content, thinking = message.get("content") or "", message.get("thinking") or ""
        if not final.get("done"):
            # a clean end without the final line: Ollama aborts a completion that repeats one token more than
            # 30 times (`v0.24.0:llm/server.go:1697-1706`; `stream: false` then answers 200 with done: false)
            raise AnswerUnfinished(f"{self.host} ended the answer without done: true after "
                                   f"{len(content)} characters (Ollama stops an answer that repeats one token "
                                   "more than 30 times)")
        if "eval_count" not in final and "prompt_eval_count" not in final:
            raise IncompleteResponse(f"{self.host} ended the answer without its metrics")
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
            raise ServerError(f"{_one_line(str(item['error']))} (in stream)", status)
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
