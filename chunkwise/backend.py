"""The contract every LLM-server client implements (`chunkwise.ollama.client.OllamaClient` today,
an OpenAI-compatible client next), so the run (`chunkwise.run`) never depends on one backend.

A client turns one chat request into a complete `ChatResult` or raises an `LLMError` subclass from
`chunkwise.errors` (the same classes for every backend: transient ones are retried, `ContextExceeded`
is recorded as a failed request, `FatalError` stops the run). It must be safe to call from many
threads at once: a run sends up to `parallel` requests concurrently through one client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class ChatResult:
    """One complete answer. Token counts are the server's own; durations are integer nanoseconds
    as Ollama reports them (0 when the server omitted the field, which Ollama does for zero values)."""

    content: str
    done_reason: str
    prompt_eval_count: int
    eval_count: int
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0
    #: Client-side wall time of the request, nanoseconds.
    wall_ns: int = 0
    #: A thinking model's reasoning trace (Ollama `message.thinking`); its tokens are in eval_count.
    thinking: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ChatClient(Protocol):
    """What a run needs from an LLM server: chat requests, and closing the connection pool."""

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
        """Send one chat request; return the complete answer or raise an `LLMError` subclass.

        `options` are Ollama's names (num_ctx, num_predict, temperature, seed; tokens); `keep_alive`
        is a Go duration or seconds; `format` a JSON schema or "json"; `truncate=False` asks the
        server to refuse an over-long prompt instead of cutting it."""
        ...

    def close(self) -> None:
        """Release the connection pool; the client is not used afterwards."""
        ...
