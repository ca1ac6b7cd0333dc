"""The HTTP plumbing the two LLM boundaries share (`chunkwise.ollama.client`, `chunkwise.openai.client`):
one request, or one streamed response, with every transport failure mapped onto the error tree of
`chunkwise.errors`. What differs per server, how an error body reads and what to tell a user who cannot
reach it, each client says in `_error_for` and `_unreachable`.

    connect refused / connect timeout  -> ServerUnavailable   (transient; the server is down)
    no byte within the read timeout    -> RequestTimeout      (transient; a stall)
    connection broke mid-body          -> IncompleteResponse  (transient)
    HTTP status >= 400                 -> the client's `_error_for(status, body, model)`
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from chunkwise.errors import IncompleteResponse, LLMError, RequestTimeout, ServerUnavailable


class HttpBoundary:
    """Base of an LLM client: `host` (the base URL) and `_http` (an `httpx.Client` on it) are set by
    the subclass, which also says how an error answer reads (`_error_for`) and what to do when the
    server cannot be reached (`_unreachable`)."""

    host: str
    _http: httpx.Client

    def _error_for(self, status: int, body: bytes, model: str) -> LLMError:
        raise NotImplementedError

    def _unreachable(self, exc: Exception) -> str:
        raise NotImplementedError

    def _request(self, method: str, path: str, *, model: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnavailable(self._unreachable(exc)) from None
        except httpx.TimeoutException as exc:
            raise RequestTimeout(f"no answer from {self.host} within the timeout ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise IncompleteResponse(f"connection to {self.host} broke mid-response: {exc}") from None
        if response.status_code >= 400:
            raise self._error_for(response.status_code, response.content, model)
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
                raise self._error_for(response.status_code, response.read(), model)
            yield response
        finally:
            response.close()
