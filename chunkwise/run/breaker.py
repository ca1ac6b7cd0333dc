"""The run-level circuit breaker: stop sending when the server keeps failing the same way.

Real Ollama 5xx errors are often persistent: a model that cannot load (`sched.go` "this model may
be incompatible", `error starting llama-server`), out of memory at this num_ctx, an option of the
wrong type (500 from `handleScheduleError`'s default), and before v0.30 an invalid JSON schema
(500 from `llm/server.go`) -- ollama/ollama v0.33.0-rc2 and v0.13.0. Each new request makes Ollama
try the load again, so retrying every row `max_attempts` times would spend days on 170,000 rows.

The breaker counts consecutive failed attempts, across all requests of the run, that ended with
the same server error: an HTTP 5xx other than 503 (a full queue is real backpressure), or an
`{"error": ...}` line inside a 200 stream (a runner crash after the first token, server/routes.go
ChatHandler). Numbers in the message are ignored when comparing (sizes and ids vary). Any answer,
or any other kind of failure, resets the count. With `parallel` requests in flight one server
hiccup fails up to `parallel` attempts at once, so the breaker trips at
`threshold + parallel - 1` consecutive failures: `threshold` more than one simultaneous burst.

When it trips, the request that tripped it is not recorded (nothing was paid for), every chunk
stops sending, every answer stays in the ledger, and the run exits 2 with the server's message;
resuming the run once the server is fixed sends only what is missing.
"""

from __future__ import annotations

import re
import threading

from chunkwise.errors import ServerBusy, ServerError, ServerKeepsFailing

_DIGITS = re.compile(r"\d+")


def signature(exc: BaseException) -> str | None:
    """What makes two failures 'the same server error', or None for failures the breaker ignores."""
    if not isinstance(exc, ServerError) or isinstance(exc, ServerBusy):
        return None
    return f"{exc.status}:{_DIGITS.sub('#', str(exc))}"


class CircuitBreaker:
    """Thread-safe; one per run (per process)."""

    def __init__(self, threshold: int, parallel: int = 1) -> None:
        self.threshold = threshold
        self.trip_at = threshold + max(parallel, 1) - 1
        self._lock = threading.Lock()
        self._signature: str | None = None
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def success(self) -> None:
        with self._lock:
            self._signature, self._count = None, 0

    def failure(self, exc: BaseException) -> ServerKeepsFailing | None:
        """Record one failed attempt; return the error to stop the run with once the breaker trips."""
        sig = signature(exc)
        with self._lock:
            if sig is None:
                self._signature, self._count = None, 0
                return None
            if sig == self._signature:
                self._count += 1
            else:
                self._signature, self._count = sig, 1
            if self._count < self.trip_at:
                return None
            count = self._count
        return ServerKeepsFailing(
            f"the server failed {count} attempts in a row with the same error: {exc}. Every answer so far is "
            "kept. Fix the server (check `ollama ps` and the server log: a model that cannot load, out of memory at "
            "this num_ctx, a bad option), then resume the run with the same run name",
            getattr(exc, "status", None),
        )
