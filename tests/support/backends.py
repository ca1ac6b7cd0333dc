"""The factory seam (`chunkwise.servers.BACKENDS`): stand a wrapping backend in for a real one, so every
client a run or a flow makes for that api sends its chat requests through a test's function.

    wrap_chat(monkeypatch, lambda client, request: ...)   # client: the real client, request: a ChatRequest

Everything else (inspect, memory, extras, the client's other endpoints) is the real backend's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chunkwise import servers
from chunkwise.backend import ChatOptions, ChatRequest, ChatResult

Chat = Callable[[Any, ChatRequest], ChatResult]


class WrappedClient:
    """A real client whose `chat` goes through `chat(real_client, request)`."""

    def __init__(self, inner: Any, chat: Chat) -> None:
        self.inner, self._chat, self.host = inner, chat, inner.host

    def chat(self, request: ChatRequest) -> ChatResult:
        return self._chat(self.inner, request)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class WrappedBackend:
    """A real backend whose clients are `WrappedClient`s (when `chat` is given) and whose other methods
    are `overrides` where named."""

    def __init__(self, inner: Any, chat: Chat | None = None, **overrides: Callable[..., Any]) -> None:
        self.inner, self._chat = inner, chat
        self.__dict__.update(overrides)

    def client(self, *args: Any, **kwargs: Any) -> Any:
        client = self.inner.client(*args, **kwargs)
        return client if self._chat is None else WrappedClient(client, self._chat)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wrap_chat(monkeypatch: Any, chat: Chat, api: str = "ollama") -> None:
    """Route every chat request of clients made for `api` through `chat` for the rest of the test."""
    monkeypatch.setitem(servers.BACKENDS, api, WrappedBackend(servers.backend_for(api), chat))


def stand_in(monkeypatch: Any, api: str = "ollama", **methods: Callable[..., Any]) -> None:
    """Replace the named methods of `api`'s backend (e.g. `probe=...`) for the rest of the test."""
    monkeypatch.setitem(servers.BACKENDS, api, WrappedBackend(servers.backend_for(api), **methods))


def request(model: str = "m", messages: list[dict[str, str]] | None = None, *, num_ctx: int = 2048,
            num_predict: int = 16, temperature: float = 0.0, seed: int = 0,
            format: dict[str, Any] | str | None = None, **extras: Any) -> ChatRequest:
    """A `ChatRequest` for a client test; keyword arguments beyond the options are the backend's extras."""
    return ChatRequest(model, messages or [], ChatOptions(num_ctx, num_predict, temperature, seed), format, extras)
