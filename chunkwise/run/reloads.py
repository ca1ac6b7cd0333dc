"""Noticing that the model was loaded again during the run: another client of the same server asked for it
with other load options.

Ollama keeps one runner per model and reloads it when a request's runner options differ from the loaded
runner's: num_ctx (`v0.24.0:server/sched.go:671-709`, `needsReload` compares `api.Runner` options) and, from
v0.30, the context-shift flag (`v0.33.0:server/sched.go:1413-1419`); a client that sends no num_ctx gets the
server's default. chunkwise sends its num_ctx and `shift: false` on every request, so a chat UI on the same
server makes the two reload the model in turn: each reload first waits for the requests in flight, then
costs a full load. chunkwise wants the server to itself, or the same num_ctx and shift from every client.

Two signs, both recorded in stats.json (`model_load.reloads`) and named in the log:
- an answer whose `load_duration` (time from the request's arrival until a runner was ready for it,
  `v0.24.0:server/routes.go` ChatHandler `checkpointLoaded - checkpointStart`) is at least `RELOAD_MIN_S`
  and `RELOAD_FACTOR` times the median of the run's earlier answers. It is never 0 on a real Ollama: the
  scheduler pings the runner for every request (`v0.24.0:server/sched.go:682-705`), usually 0.25-0.35 s on
  the 2-core CPU machine of the real-Ollama tests but up to 1.2 s while both cores generate (measured
  2026-12-07 on runs nobody else used), and a reload of the 270M test model takes 1.2-2.4 s there. So
  the sign cannot tell a slow ping from the reload of a model that loads in under `RELOAD_MIN_S`; for
  the models batch runs use (GBs, loads of several seconds) it can. The model was
  loaded before the first request (`chunkwise.run.preload`), so the first answers are not loads;
- the server's memory view after a chunk showing the model at another context length than right after
  the run loaded it (another client's runner is loaded now: Ollama reports the runner's num_ctx per slot,
  `v0.24.0:llm/server.go:1937-1939`), or not loaded at all.
"""

from __future__ import annotations

import statistics
import threading
from typing import Any

from chunkwise.logs import RunLogger, logger

#: An answer waited for a (re)load when its load_duration is at least this many seconds...
RELOAD_MIN_S = 2.0
#: ...and at least this many times the median load_duration of the run's earlier answers.
RELOAD_FACTOR = 3.0
#: Earlier answers the median is taken over (the first ones of the run).
BASELINE_SAMPLES = 64
#: Events kept for stats.json (the first ones).
EVENTS_KEPT = 20


def log() -> RunLogger:
    return logger("chunkwise.run.reloads")


class ReloadWatch:
    """Thread-safe; one per run (per process). `answered` is called for every answer, `memory_seen` after
    every chunk."""

    def __init__(self, num_ctx: int) -> None:
        #: The context length the memory view should show: the one it showed after the run's own load (Ollama
        #: raises some models' num_ctx, e.g. vision models to 2048), until then the run's num_ctx.
        self.num_ctx = num_ctx
        self._lock = threading.Lock()
        self._baseline: list[int] = []
        self.answers_after_a_load = 0
        self.other_context_seen = 0
        self.events: list[dict[str, Any]] = []

    def _threshold_ns(self) -> float:
        median = statistics.median(self._baseline) if self._baseline else 0
        return max(RELOAD_MIN_S * 1e9, RELOAD_FACTOR * median)

    def answered(self, row: int, load_duration_ns: int) -> None:
        """One answer's load_duration (ns; 0 where the server reports none)."""
        with self._lock:
            if load_duration_ns < self._threshold_ns():
                if len(self._baseline) < BASELINE_SAMPLES:
                    self._baseline.append(load_duration_ns)
                return
            self.answers_after_a_load += 1
            first = self.answers_after_a_load == 1
            if len(self.events) < EVENTS_KEPT:
                self.events.append({"row": row, "load_s": round(load_duration_ns / 1e9, 3)})
        if first:
            log().warning("the model was loaded again during the run: row %d waited %.1f s for a load "
                          "(load_duration). Another client of this server asked for it with another num_ctx or "
                          "shift; chunkwise wants the server to itself (see stats.json model_load.reloads)",
                          row, load_duration_ns / 1e9)

    def expect(self, entry: dict[str, Any] | None) -> None:
        """The memory view right after the run's own load: its context length is the run's."""
        if entry is not None and isinstance(entry.get("context_length"), int):
            self.num_ctx = entry["context_length"]

    def memory_seen(self, entry: dict[str, Any] | None) -> None:
        """The memory view read after a chunk: the model at another context length, or not loaded."""
        length = None if entry is None else entry.get("context_length")
        if entry is not None and (not isinstance(length, int) or length == self.num_ctx):
            return
        with self._lock:
            self.other_context_seen += 1
            first = self.other_context_seen == 1
            if len(self.events) < EVENTS_KEPT:
                self.events.append({"memory_view": "not loaded" if entry is None else f"context_length {length}"})
        if first:
            what = "is not loaded" if entry is None else f"is loaded at context_length {length}"
            log().warning("after a chunk the server's memory view says the model %s, not %d as the run loaded "
                          "it: another client is using this server with other options, and each switch reloads "
                          "the model", what, self.num_ctx)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"answers_after_a_load": self.answers_after_a_load,
                    "memory_view_other_context": self.other_context_seen,
                    "threshold_s": round(self._threshold_ns() / 1e9, 3), "events": list(self.events)}
