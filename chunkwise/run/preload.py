"""Before the first chunk: load the model the way the run's requests will ask for it, then read the server's
memory view, so a model that cannot load or does not fit the GPU stops the run before anything is paid for.

The load is the backend's (`Backend.preload`: Ollama answers an empty-`messages` chat with
`done_reason: "load"` once the model is loaded, `v0.24.0:server/routes.go:2372-2392`; an OpenAI-compatible
server has no such step). It carries the run's num_ctx and request fields, so the first row does not
reload the model (num_ctx is a reload key, `v0.24.0:server/sched.go:671-709`; `shift` too from v0.30,
`v0.33.0:server/sched.go:1413-1419`). A 503 (the load queue is full) is waited out for up to
`busy_timeout_s`; another transient failure is tried `LOAD_ATTEMPTS` times; a load that keeps failing stops
the run (`ServerKeepsFailing`, exit 2, resumable) with the server's message, as the circuit breaker would
after several rows.

The memory view then decides (`Backend.memory`):
- part of the model on the CPU of a server with a GPU (`spill_warning`: Ollama's `/api/ps` size_vram below
  size): every request would be several times slower, so the run stops (`ServerMismatch`, exit 2, one line)
  unless `allow_spill` asks for a warning instead;
- every model on the CPU (`cpu_only`: size_vram 0 for all of them, a server without a GPU): one line of
  information, no stop and no warning.
"""

from __future__ import annotations

import time
from typing import Any

from chunkwise.backend import ChatOptions, ChatRequest
from chunkwise.errors import (
    LLMError,
    RunInterrupted,
    ServerBusy,
    ServerKeepsFailing,
    ServerMismatch,
    ServerUnavailable,
    TransientError,
)
from chunkwise.logs import RunLogger, logger
from chunkwise.run.send import backoff_delay
from chunkwise.run.session import RunSession
from chunkwise.settings import get_settings
from chunkwise.units import MIB

#: Attempts of the load request on a transient failure other than 503.
LOAD_ATTEMPTS = 3


def log() -> RunLogger:
    return logger("chunkwise.run.preload")


def load_model(session: RunSession) -> float | None:
    """Load the run's model (see the module docstring); the seconds the load took, or None where the server has
    no load step. Raises `ServerKeepsFailing` (the load keeps failing), `SetupError` (unreachable) or the
    server's `FatalError`."""
    p, settings = session.ctx.params, get_settings()
    request = ChatRequest(p.model, [], ChatOptions(p.num_ctx, p.num_predict, p.temperature, p.seed), None,
                          session.extras)
    failures = busy = 0
    busy_since: float | None = None
    while True:
        try:
            seconds = session.backend.preload(session.client, request)
        except ServerBusy as exc:
            busy += 1
            busy_since = busy_since if busy_since is not None else time.monotonic()
            if time.monotonic() - busy_since > settings.busy_timeout_s:
                raise ServerKeepsFailing(f"the server stayed busy for {settings.busy_timeout_s:g} s while chunkwise "
                                         f"tried to load {p.model}: {exc}; resume the run when it has room") from None
            wait = backoff_delay(busy, settings.retry_base_delay_s, settings.retry_max_delay_s)
        except TransientError as exc:
            failures += 1
            if failures >= LOAD_ATTEMPTS:
                if isinstance(exc, ServerUnavailable):
                    raise
                raise ServerKeepsFailing(
                    f"the server could not load {p.model} at num_ctx {p.num_ctx} ({failures} tries): {exc}. Nothing "
                    "was sent; fix the server (its log says why: a model that cannot load, out of memory at this "
                    "num_ctx), then resume the run with the same run name", exc.status) from None
            wait = backoff_delay(failures, settings.retry_base_delay_s, settings.retry_max_delay_s)
        else:
            if seconds is not None:
                log().info("loaded %s at num_ctx %d in %.1f s before the first request", p.model, p.num_ctx, seconds)
            return seconds
        if session.stop.wait(wait):
            raise RunInterrupted(f"stopped on request while loading {p.model}; resume with the same run name")


def check_memory(session: RunSession) -> dict[str, Any] | None:
    """The memory view after the load, judged (see the module docstring); the entry, or None without one."""
    p = session.ctx.params
    try:
        entry = session.backend.memory(session.client, p.model)
    except LLMError as exc:
        log().warning("could not read the memory view of %s after loading %s: %s", session.client.host, p.model, exc)
        return None
    if entry is None:
        return None
    if entry.get("cpu_only"):
        log().info("%s runs on the CPU: the server reports size_vram 0 for every loaded model (a server without a "
                   "GPU, or a GPU too small for even one layer); no GPU spill to warn about", p.model)
    elif entry.get("spill_warning"):
        size, vram = int(entry.get("size") or 0), int(entry.get("size_vram") or 0)
        what = (f"{p.model} at num_ctx {p.num_ctx} x parallel {p.parallel} does not fit the GPU: the server's memory "
                f"view puts {(size - vram) / MIB:.0f} MiB of {size / MIB:.0f} MiB ({(size - vram) / max(size, 1):.0%}) "
                "on the CPU, so every request would run several times slower")
        if not p.allow_spill:
            raise ServerMismatch(f"{what}; lower --num-ctx or --parallel (and OLLAMA_NUM_PARALLEL), use a smaller "
                                 "quantisation, or pass --allow-spill to run anyway")
        log().warning("%s (--allow-spill: running anyway)", what)
    return entry


def preload(session: RunSession) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`load_model` then `check_memory`: (what stats.json records of it, the memory view's entry)."""
    seconds = load_model(session)
    entry = check_memory(session)
    placement = None if entry is None else "cpu_only" if entry.get("cpu_only") else \
        "spill" if entry.get("spill_warning") else "gpu"
    return {"load_s": None if seconds is None else round(seconds, 3), "placement": placement}, entry
