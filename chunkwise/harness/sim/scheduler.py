"""Model loading, parallel slots, the wait queue and keep_alive (research ollama.md sections 3-5).

One model is loaded at a time, with `parallel` slots of `num_ctx` tokens each. A request whose
(model, num_ctx, parallel, KV type) differs from the loaded one needs a reload: it waits until
every in-flight request has finished, then the model loads for `load_ms` (a real sleep). Requests
are served first come, first served. Only requests that need a (re)load count against `max_queue`:
one more gets `ServerBusy` (HTTP 503) at once, while requests for the loaded (or loading) model wait
without limit (`v0.33.0-rc2:server/sched.go:197-208`: the fast path `useLoadedRunner` skips the
bounded `pendingReqCh`). The request at the head of the reload queue is not in the channel any more:
`processPending` has taken it and waits for the runner to drain (`v0.24.0:server/sched.go:126-139,163-260`),
so max_queue + 1 requests can wait for a reload. Eras before v0.11.5 bounded every waiter
(`SimOptions.era.queue_loads_only`).

A load can fail (`SimOptions.load_failure`): the request that triggered it gets `LoadFailed` (HTTP
500 with the runner's message), the model stays unloaded, and the next waiting request tries the
load again, as each Ollama request does (`server/sched.go:575-600,733-738`).

Each slot keeps the tokens it last processed (prompt + answer). A request takes the free slot with
the longest common token prefix (Ollama's findLongestCacheSlot) and re-evaluates only the rest,
at least 1 token. keep_alive: the timer starts when the last in-flight request ends; 0 unloads
then; an expired model disappears from /api/ps and the next request loads it again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chunkwise.harness.sim.faults import load_error
from chunkwise.harness.sim.memory import loaded_size
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.profiles import ModelProfile
from chunkwise.harness.sim.prompt import Segments
from chunkwise.harness.sim.stats import SimStats
from chunkwise.units import MIB

BUSY = "server busy, please try again.  maximum pending requests exceeded"
_CHUNKS = (4096, 128, 8)


class ServerBusy(Exception):
    pass


class LoadFailed(Exception):
    """The model could not be loaded; the message is the runner's (HTTP 500)."""


def common_prefix(a: list[Any], b: list[Any], start: int = 0) -> int:
    """Length of the common prefix of two token lists, compared in C-speed slices (100K tokens: < 1 ms).
    `start`: a length both lists are known to share (`shared_segments`); comparing begins there."""
    n = min(len(a), len(b))
    i = min(start, n)
    for step in _CHUNKS:
        while i + step <= n and a[i : i + step] == b[i : i + step]:
            i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_segments(a: Segments, b: Segments) -> int:
    """Tokens at the start of two token lists that are known equal without comparing them: the
    lengths of the leading segments both lists were built from that are the same object (a cached
    message's token tuple, `prompt.message_tokens`). A shortcut for `common_prefix` only: an object
    is equal to itself, so the result never exceeds the true common prefix."""
    total = 0
    for x, y in zip(a, b, strict=False):
        if x is not y:
            break
        total += len(x)
    return total


@dataclass(frozen=True)
class LoadKey:
    model: str
    num_ctx: int
    parallel: int
    kv_cache_type: str
    #: Context shift on (`shift`); a change restarts llama-server (`v0.33.0-rc2:server/sched.go:1413-1419`).
    shift: bool = True


@dataclass(eq=False)
class Slot:
    index: int
    tokens: list[str] = field(default_factory=list)
    #: The token tuples `tokens` starts with (see `shared_segments`); () when unknown.
    segments: Segments = ()
    busy: bool = False
    #: perf_counter_ns when the current lease began (for slot-occupancy accounting).
    busy_since_ns: int = 0


@dataclass(eq=False)
class Loaded:
    key: LoadKey
    profile: ModelProfile
    slots: list[Slot]
    #: perf_counter_ns when the load finished.
    ready_ns: int
    active: int = 0
    session_s: float = 300.0
    #: time.time() at which the idle model unloads; None while busy or when kept forever.
    expires_at: float | None = None
    #: Total ns by which prefills delayed other slots' decoding (the shared engine, timing.py).
    stall_ns: int = 0


@dataclass(eq=False)
class Lease:
    loaded: Loaded
    slot: Slot
    #: Prompt tokens found in the slot's cache (not re-evaluated).
    cached: int


@dataclass(eq=False)
class _Waiter:
    key: LoadKey
    profile: ModelProfile
    tokens: list[str] | None
    keep_alive_s: float
    future: asyncio.Future[Lease]
    segments: Segments = ()


class Scheduler:
    def __init__(self, options: Callable[[], SimOptions], stats: SimStats) -> None:
        self._options = options
        self.stats = stats
        self.loaded: Loaded | None = None
        self.waiters: deque[_Waiter] = deque()
        self._load_task: asyncio.Task[None] | None = None
        self._loading_key: LoadKey | None = None

    # -- acquire / release -------------------------------------------------------------------
    async def acquire(
        self, key: LoadKey, profile: ModelProfile, tokens: list[str] | None, keep_alive_s: float,
        segments: Segments = (),
    ) -> Lease:
        """A slot of the model `key` describes; waits for a slot or a (re)load. Raises ServerBusy.
        `segments`: the token tuples `tokens` starts with (a shortcut for the prefix comparison)."""
        self._expire()
        loaded = self.loaded
        if not self.waiters and self._load_task is None and loaded is not None and loaded.key == key:
            lease = self._assign(loaded, tokens, keep_alive_s, segments)
            if lease is not None:
                return lease
        if self._queue_length(key) >= self._options().max_queue:
            raise ServerBusy(BUSY)
        waiter = _Waiter(key, profile, tokens, keep_alive_s, asyncio.get_running_loop().create_future(), segments)
        self.waiters.append(waiter)
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result(), None)
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
                self._dispatch()
            raise

    def _queue_length(self, key: LoadKey) -> int:
        """Waiters that count against max_queue for a request for `key` (-1: never refused)."""
        if not self._options().era.queue_loads_only:
            return len(self.waiters)
        current = self.loaded.key if self.loaded is not None else self._loading_key
        if key == current:
            return -1
        waiting = sum(1 for w in self.waiters if w.key != current)
        if not waiting and self._load_task is None:
            # the scheduler is idle, receiving: even an unbuffered channel (OLLAMA_MAX_QUEUE=0) takes the request
            # (`v0.24.0:server/sched.go:71,133-138,163`: a `select` send with `default` succeeds on a waiting
            # receiver); while it loads a model it receives nothing, and only the channel's buffer takes requests
            return -1
        if self.waiters[0].key != current:
            waiting -= 1  # the scheduler has taken the first one off the queue (`v0.24.0:server/sched.go:163`)
        return waiting

    def release(self, lease: Lease, tokens: list[str] | None, segments: Segments = ()) -> None:
        """Give the slot back; `tokens` (prompt + answer) become its cache, None keeps the old cache.
        `segments`: the token tuples `tokens` starts with, () when unknown."""
        loaded = lease.loaded
        lease.slot.busy = False
        self.stats.slot_released(lease.slot.busy_since_ns, time.perf_counter_ns())
        if tokens is not None:
            lease.slot.tokens = tokens
            lease.slot.segments = segments
        loaded.active -= 1
        if loaded is self.loaded and loaded.active == 0:
            if loaded.session_s <= 0:
                self.unload()
            elif math.isfinite(loaded.session_s):
                loaded.expires_at = time.time() + loaded.session_s
        self._dispatch()

    def _assign(
        self, loaded: Loaded, tokens: list[str] | None, keep_alive_s: float, segments: Segments = ()
    ) -> Lease | None:
        best: Slot | None = None
        best_len = -1
        for slot in loaded.slots:
            if slot.busy:
                continue
            length = common_prefix(slot.tokens, tokens, shared_segments(slot.segments, segments)) if tokens else 0
            if length > best_len:
                best, best_len = slot, length
        if best is None:
            return None
        best.busy = True
        best.busy_since_ns = time.perf_counter_ns()
        self.stats.slot_acquired(best.busy_since_ns)
        loaded.active += 1
        loaded.session_s = keep_alive_s
        loaded.expires_at = None
        cached = min(best_len, len(tokens) - 1) if tokens else 0
        return Lease(loaded, best, max(cached, 0))

    def _dispatch(self) -> None:
        self._expire()
        while self.waiters and self._load_task is None:
            head = self.waiters[0]
            if head.future.done():
                self.waiters.popleft()
                continue
            loaded = self.loaded
            if loaded is not None and loaded.key == head.key:
                lease = self._assign(loaded, head.tokens, head.keep_alive_s, head.segments)
                if lease is None:
                    return
                self.waiters.popleft()
                head.future.set_result(lease)
                continue
            if loaded is not None and loaded.active > 0:
                return  # a reload waits for in-flight requests to finish
            self.unload()
            self._loading_key = head.key
            self._load_task = asyncio.get_running_loop().create_task(self._load(head))
            return

    async def _load(self, head: _Waiter) -> None:
        options = self._options()
        load_s = options.load_ms / 1000
        if load_s > 0:
            await asyncio.sleep(load_s)  # a cancelled load (reset, stop) ends here; reset() clears _load_task
        self._load_task = None
        self._loading_key = None
        error = load_error(options, head.key.num_ctx, head.profile)
        if error is not None:
            self.stats.faults["load_failure"] += 1
            if head in self.waiters:
                self.waiters.remove(head)
            if not head.future.done():
                head.future.set_exception(LoadFailed(error))
        else:
            slots = [Slot(i) for i in range(head.key.parallel)]
            self.loaded = Loaded(head.key, head.profile, slots, time.perf_counter_ns())
            self.stats.loads += 1
        self._dispatch()

    # -- model state -----------------------------------------------------------------------
    def unload(self) -> None:
        if self.loaded is not None:
            self.loaded = None
            self.stats.unloads += 1

    def _expire(self) -> None:
        loaded = self.loaded
        if loaded is None or loaded.active or loaded.expires_at is None:
            return
        if time.time() >= loaded.expires_at:
            self.unload()

    def reset(self) -> None:
        """Forget the loaded model and its slots (a restarted server). Waiting requests stay queued."""
        if self._load_task is not None:
            self._load_task.cancel()
            self._load_task = None
        self._loading_key = None
        self.loaded = None
        try:
            asyncio.get_running_loop()
            self._dispatch()
        except RuntimeError:
            pass

    def ps(self) -> list[dict[str, Any]]:
        """/api/ps `models` entries."""
        self._expire()
        loaded = self.loaded
        if loaded is None:
            return []
        options = self._options()
        profile, key = loaded.profile, loaded.key
        size = loaded_size(profile, key.num_ctx, key.parallel, key.kv_cache_type, options.vram_mib, options.era,
                           options.compute_buffers, options.kv_layout)
        if loaded.expires_at is not None:
            expires = loaded.expires_at
        elif math.isfinite(loaded.session_s):
            expires = time.time() + loaded.session_s
        else:
            expires = None  # forever
        return [
            {
                "name": profile.name,
                "model": profile.name,
                "size": size,
                "digest": profile.build_digest(options.model_build),
                "details": profile.details(),
                "expires_at": expires,
                "size_vram": min(size, options.vram_mib * MIB),
                "context_length": key.num_ctx,
            }
        ]

    @property
    def queued(self) -> int:
        return len(self.waiters)

    @property
    def in_flight(self) -> int:
        return self.loaded.active if self.loaded is not None else 0
