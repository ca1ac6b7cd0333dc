"""Reading an answer of `/v1/chat/completions`: server-sent events (`data: {...}` lines, `data: [DONE]`
at the end, a last chunk with `choices: []` and `usage` when `stream_options.include_usage` was
asked), or one JSON object when not streamed; then the `ChatResult` the run records.

    a stream without `[DONE]` or without a finish_reason  -> IncompleteResponse (retried)
    an answer without usage                               -> BadRequest (the server cannot serve a run)
"""

from __future__ import annotations

from typing import Any

import orjson

from chunkwise.backend import ChatResult
from chunkwise.errors import BadRequest, IncompleteResponse
from chunkwise.openai.failures import stream_error


class StreamState:
    """What the stream has said so far: the text, the finish reason, the usage, llama.cpp timings."""

    __slots__ = ("done", "finish_reason", "pieces", "thoughts", "timings", "usage")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        #: The reasoning trace, llama-server's and vLLM's `reasoning_content` (tools/server/server-chat.cpp).
        self.thoughts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.done = False


def event_line(line: bytes, state: StreamState, host: str) -> None:
    """Fold one line of the event stream into `state`. Blank lines, `:` comments (llama.cpp's
    keep-alive pings) and `event:`/`id:` fields carry nothing here; an `error` event (an error after
    the stream started arrives as an event of a 200 response) raises its `LLMError`."""
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
        raise IncompleteResponse(f"{host} sent an event that is not JSON: {payload[:120]!r}") from None
    if "error" in item:
        raise stream_error(item["error"])
    for choice in item.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            state.pieces.append(content)
        reasoning = delta.get("reasoning_content")
        if reasoning:
            state.thoughts.append(reasoning)
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]
    if item.get("usage"):
        state.usage = item["usage"]
    if item.get("timings"):
        state.timings = item["timings"]


def whole_answer(data: dict[str, Any]) -> StreamState:
    """The state of a complete, not streamed answer (`stream: false`)."""
    state = StreamState()
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    state.pieces.append(message.get("content") or "")
    state.thoughts.append(message.get("reasoning_content") or "")
    state.finish_reason = choice.get("finish_reason")
    state.usage = data.get("usage")
    state.timings = data.get("timings")
    state.done = True
    return state


def chat_result(state: StreamState, wall_ns: int, host: str) -> ChatResult:
    """The recorded result of a finished answer; token counts are the server's `usage`, durations
    llama.cpp's `timings` (milliseconds) where present (other servers report none: 0 ns)."""
    if state.finish_reason is None:
        raise IncompleteResponse(f"{host} ended the answer without a finish_reason")
    if state.usage is None:
        raise BadRequest(
            f"{host} sent no token usage (stream_options.include_usage is not supported by this server); "
            "chunkwise needs the server's token counts: use a server that reports usage (llama-server, vLLM, "
            "Ollama) or set CHUNKWISE_OPENAI_STREAM=false"
        )
    timings = state.timings or {}
    usage = state.usage
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    prompt_ms, predicted_ms = float(timings.get("prompt_ms") or 0), float(timings.get("predicted_ms") or 0)
    return ChatResult(
        content="".join(state.pieces),
        done_reason=state.finish_reason,
        prompt_eval_count=int(usage.get("prompt_tokens") or 0),
        eval_count=int(usage.get("completion_tokens") or 0),
        prompt_eval_duration=int(prompt_ms * 1e6),
        eval_duration=int(predicted_ms * 1e6),
        total_duration=int((prompt_ms + predicted_ms) * 1e6),
        wall_ns=wall_ns,
        thinking="".join(state.thoughts),
        extra={"cached_tokens": int(cached)} if isinstance(cached, int) else {},
    )
