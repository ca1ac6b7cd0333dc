"""The HTTP plumbing the two LLM boundaries share (`chunkwise.ollama.client`, `chunkwise.openai.client`):
the pooled `httpx.Client`s (one per 16 connections, `HttpBoundary._http`), one request or one streamed
response, every transport failure mapped onto the error tree of `chunkwise.errors` in one place
(`map_transport_errors`, as httpx's own `_transports/default.py` `map_httpcore_exceptions` maps
httpcore's), and the status ladder every server shares (`classify_status`).

    connect refused / connect timeout  -> ServerUnavailable   (transient; the server is down)
    no byte within the read timeout    -> RequestTimeout      (transient; a stall)
    connection broke mid-body          -> IncompleteResponse  (transient)
    HTTP status >= 400                 -> the client's `_error_for(status, body, model)`: its own special
                                          cases (context phrases, 404 hints, keys), then `classify_status`

What differs per server, how an error body reads and what to tell a user who cannot reach it, each
client says in `_error_for` and `_unreachable`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Self

import httpx

from chunkwise import __version__
from chunkwise.errors import (
    BadRequest,
    IncompleteResponse,
    LLMError,
    RequestTimeout,
    ServerBusy,
    ServerError,
    ServerUnavailable,
)

#: Seconds an idle pooled connection is kept (httpx's own default).
DEFAULT_KEEPALIVE_EXPIRY_S = 5.0
#: Seconds a request body may take to write.
WRITE_TIMEOUT_S = 60.0
#: Threads per httpx pool, roughly: httpcore's pool takes one lock at every request's start and end and
#: walks its requests and connections under it, so 256 threads on one pool spent a third of the client's
#: CPU waiting for that lock (py-spy, issue 22); a client for hundreds in flight deals its threads over
#: max_connections / this many pools.
POOL_CONNECTIONS = 16


def transport_error(exc: Exception, host: str, unreachable: Callable[[Exception], str],
                    read_timeout_s: float | None = None) -> LLMError | None:
    """The error-tree error an httpx transport failure means (the table in the module docstring), or None
    for anything else; `unreachable(exc)` words the "server is down" message."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnavailable(unreachable(exc))
    if isinstance(exc, httpx.TimeoutException):
        within = f" {read_timeout_s:g} s" if read_timeout_s is not None and isinstance(exc, httpx.ReadTimeout) else ""
        return RequestTimeout(f"no answer from {host} within the{within} timeout ({type(exc).__name__})")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return IncompleteResponse(f"connection to {host} broke mid-response: {exc}")
    return None


class map_transport_errors:
    """`with map_transport_errors(host, unreachable):` translates the httpx transport failures raised in
    the block (`transport_error`); errors already in the tree pass through untouched, so blocks may nest.
    A class rather than a generator: it wraps every request, and holds no state, so one serves a client's
    every thread."""

    __slots__ = ("host", "read_timeout_s", "unreachable")

    def __init__(self, host: str, unreachable: Callable[[Exception], str], read_timeout_s: float | None = None) -> None:
        self.host, self.unreachable, self.read_timeout_s = host, unreachable, read_timeout_s

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, httpx.TransportError):
            mapped = transport_error(exc, self.host, self.unreachable, self.read_timeout_s)
            if mapped is not None:
                raise mapped from None


def classify_status(status: int, message: str) -> LLMError:
    """The tail of every server's status ladder, after its own special cases: 503 (busy, loading)
    -> ServerBusy and other 5xx or 429 -> ServerError (both retried), anything else -> BadRequest (fatal)."""
    if status == 503:
        return ServerBusy(f"{message} (status 503)", status)
    if status >= 500 or status == 429:
        return ServerError(f"{message} (status {status})", status)
    return BadRequest(f"{message} (status {status})", status)


class HttpBoundary:
    """Base of an LLM client: `host` (the normalised base URL) and `_http`, the calling thread's pooled
    `httpx.Client` on it (`POOL_CONNECTIONS`). Timeouts live here, not in Prefect: a Prefect task timeout
    cannot interrupt a thread blocked on a socket. `read_timeout_s` bounds the silence between two bytes, so
    a stalled server is detected without capping long generations. The subclass says how an error answer
    reads (`_error_for`) and what to do when the server cannot be reached (`_unreachable`)."""

    def __init__(self, host: str, *, connect_timeout_s: float, read_timeout_s: float, max_connections: int,
                 headers: dict[str, str] | None = None, keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.host = host
        timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=WRITE_TIMEOUT_S, pool=None)
        self._errors = map_transport_errors(host, self._unreachable, read_timeout_s)
        # Every pool may open as many connections as the whole client (the run's slot semaphore bounds what
        # is on the wire), so a pool whose threads happen to be busy together never makes one of them wait.
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                              keepalive_expiry=keepalive_expiry_s)
        all_headers = {"User-Agent": f"chunkwise/{__version__}", **(headers or {})}
        self._pool_args: dict[str, Any] = {"base_url": host, "timeout": timeout, "limits": limits,
                                           "headers": all_headers, "transport": transport}
        count = 1 if transport is not None else max(1, -(-max_connections // POOL_CONNECTIONS))
        self._pools: list[httpx.Client | None] = [None] * count
        self._pools_lock = threading.Lock()
        self._next_pool = itertools.count()
        self._mine = threading.local()

    @property
    def _http(self) -> httpx.Client:
        """This thread's pool: threads are dealt round-robin over the pools on first use and keep theirs."""
        pool: httpx.Client | None = getattr(self._mine, "pool", None)
        if pool is None:
            with self._pools_lock:
                index = next(self._next_pool) % len(self._pools)
                pool = self._pools[index]
                if pool is None:
                    pool = self._pools[index] = httpx.Client(**self._pool_args)
            self._mine.pool = pool
        return pool

    def close(self) -> None:
        """Release the connection pools; the client is not used afterwards."""
        with self._pools_lock:
            pools, self._pools = self._pools, [None] * len(self._pools)
        for pool in pools:
            if pool is not None:
                pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error_for(self, status: int, body: bytes, model: str) -> LLMError:
        raise NotImplementedError

    def _unreachable(self, exc: Exception) -> str:
        raise NotImplementedError

    def _mapped(self) -> AbstractContextManager[None]:
        """`map_transport_errors` for this client's host and wording (one instance, made with the client)."""
        return self._errors

    def _request(self, method: str, path: str, *, model: str, **kwargs: Any) -> httpx.Response:
        with self._mapped():
            response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise self._error_for(response.status_code, response.content, model)
        return response

    @contextmanager
    def _send_stream(self, method: str, path: str, *, model: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response whose status is below 400 (the body is the caller's to read, inside
        `_mapped()` so a break mid-body is mapped too); closed when the block ends."""
        request = self._http.build_request(method, path, **kwargs)
        with self._mapped():
            response = self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with self._mapped():
                    body = response.read()
                raise self._error_for(response.status_code, body, model)
            yield response
        finally:
            response.close()
