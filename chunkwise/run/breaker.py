"""The run-level circuit breaker: stop sending when the server fails the same way on row after row.

Real Ollama 5xx errors are often persistent: a model that cannot load (`sched.go` "this model may
be incompatible", `error starting llama-server`), out of memory at this num_ctx, an option of the
wrong type (500 from `handleScheduleError`'s default), and before v0.30 an invalid JSON schema
(500 from `llm/server.go`) -- ollama/ollama v0.33.0-rc2 and v0.13.0. Each new request makes Ollama
try the load again, so retrying every row `max_attempts` times would spend days on 170,000 rows.

Other 5xx are persistent for one request only (a poison row): a template that cannot render that
row's messages (`v0.24.0:server/routes.go:2432-2436`, "template: ... error calling index"), a builtin
parser that cannot read the model's answer to it (`v0.33.0-rc2:server/routes.go:2892-2895`), or
llama-server refusing that prompt (`llm/llama_server.go:1648-1655`). Such a row fails all its attempts
and is recorded `failed` with the server's message; the run goes on. So the breaker counts ROWS, not
attempts: it trips when the same failure hit `threshold + parallel - 1` different rows in a row (with
`parallel` requests in flight one server hiccup fails up to `parallel` rows at once, so the breaker
trips `threshold` rows after one simultaneous burst). A row's own retries never add to the count, and a
resume, which does not send a recorded row again, does not trip on it again.

What counts as "the same failure" (its signature):
- an HTTP 5xx other than 503, or an `{"error": ...}` line inside a 200 stream (a runner crash after
  the first token, server/routes.go ChatHandler): the status and the message with its digits masked
  (sizes and ids vary);
- a read timeout (no byte for `read_timeout_s`): Ollama has no per-request timeout and a hung runner
  stalls every request. A timeout is strong evidence, so timeouts trip at `min(threshold, 2) +
  parallel - 1` different rows (and each row gets two timed-out attempts, `chunkwise.run.send`): a
  server that stalls every request stops the run within a few read timeouts, not 6 x 900 s per row;
- an answer that ended without `done: true` (Ollama's repeated-token abort, or a body that broke off):
  a wall of them trips like a 5xx; a warmer retry that is answered resets the count.

Each signature keeps its own set of rows; a failure of another kind does not reset them (rows that fail
one way and then another, with no answer in between, are still rows in a row that failed). Any answer (a
`ContextExceeded` 400 is an answer too) resets them all. A 503 (a full queue: back-pressure) and an
unreachable server (the chunk task retries it later) neither count nor reset.

When it trips, the request that tripped it is not recorded (nothing was paid for), every chunk stops
sending, every answer stays in the ledger, and the run exits 2 with the server's message; resuming the
run once the server is fixed sends only what is missing (`--retry-failed` also re-sends the rows recorded
failed before the stop).
"""

from __future__ import annotations

import re
import threading

from chunkwise.errors import IncompleteResponse, RequestTimeout, ServerBusy, ServerError, ServerKeepsFailing

_DIGITS = re.compile(r"\d+")
#: The signature of a read timeout.
TIMEOUT = "timeout"
#: Different rows that must time out in a row (plus `parallel - 1`) before the breaker trips, at most.
TIMEOUT_ROWS = 2


def signature(exc: BaseException) -> str | None:
    """What makes two failures 'the same', or None for failures the breaker ignores (see the module docstring)."""
    if isinstance(exc, ServerBusy):
        return None
    if isinstance(exc, ServerError):
        return f"{exc.status}:{_DIGITS.sub('#', str(exc))}"
    if isinstance(exc, RequestTimeout):
        return TIMEOUT
    if isinstance(exc, IncompleteResponse):
        return f"incomplete:{type(exc).__name__}"
    return None


def _advice(sig: str) -> str:
    if sig == TIMEOUT:
        return ("no answer arrived within the read timeout: the server is stalled (a hung runner: check `ollama ps` "
                "and the server log, restart Ollama) or slower than CHUNKWISE_READ_TIMEOUT_S allows")
    if sig.startswith("incomplete:"):
        return "the server keeps ending answers without done: true; check its log"
    return ("fix the server (check `ollama ps` and the server log: a model that cannot load, out of memory at "
            "this num_ctx, a bad option)")


class CircuitBreaker:
    """Thread-safe; one per run (per process)."""

    def __init__(self, threshold: int, parallel: int = 1) -> None:
        self.threshold = threshold
        burst = max(parallel, 1) - 1
        #: Different rows in a row with the same failure that trip the breaker.
        self.trip_at = threshold + burst
        self.timeout_trip_at = min(threshold, TIMEOUT_ROWS) + burst
        self._lock = threading.Lock()
        #: signature -> the different rows that failed with it since the last answer
        self._streaks: dict[str, set[int]] = {}

    @property
    def count(self) -> int:
        """Different rows in the longest current streak."""
        return max((len(rows) for rows in self._streaks.values()), default=0)

    def success(self) -> None:
        with self._lock:
            self._streaks = {}

    def failure(self, exc: BaseException, row: int) -> ServerKeepsFailing | None:
        """Record one failed attempt of input row `row`; return the error to stop the run with once the
        breaker trips (and for every later failure of the streak)."""
        sig = signature(exc)
        if sig is None:
            return None
        with self._lock:
            streak = self._streaks.setdefault(sig, set())
            streak.add(row)
            rows = len(streak)
        if rows < (self.timeout_trip_at if sig == TIMEOUT else self.trip_at):
            return None
        advice = _advice(sig)
        return ServerKeepsFailing(
            f"{rows} different rows in a row failed the same way: {exc}. {advice[0].upper()}{advice[1:]}. Every "
            "answer so far is kept; resume the run with the same run name once the server is fixed (add "
            "--retry-failed to re-send rows recorded failed meanwhile)",
            getattr(exc, "status", None),
        )
