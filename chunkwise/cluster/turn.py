"""A host's sending turn: how a shard started ahead waits for the shard before it (no Prefect here).

`chunkwise worker --shards-at-once 2` lets Prefect's process worker hold two shard runs at once (`--limit 2`,
`chunkwise.cluster.worker.SHARDS_AT_ONCE`; prefect 3.9.1 `workers/base.py` takes a run only while its
`anyio.CapacityLimiter` of `limit` tokens has one free, and polls every PREFECT_WORKER_QUERY_SECONDS).
The second run is the next shard, dispatched ahead: its process starts, imports, reads the run's
context and checks the host (`chunkwise.cluster.preflight`) while the first shard still sends, then
waits here for the host's turn. Without it a host sat idle between two shards for the worker's poll,
the process start and the preflight (5.2 s with Prefect 3.9.1, bench/results/scaleout.md).

The turn is an exclusive `flock` on a file the worker names in CHUNKWISE_WORKER_TURN (one per worker,
so per host, whatever run the shards belong to). The sending shard gives it up as soon as it leaves
one of its slots idle for `settle_s` (its last requests are on the wire and nothing waits for a slot:
the tail), or when it ends; the waiting shard then sends into the slots the tail frees. During that
tail the host holds up to twice its slots in flight (the server queues the excess; Ollama queues up to
OLLAMA_MAX_QUEUE, 512 by default), which costs the tail's answers some latency, never an answer:
chunk locks (`chunkwise.store.chunklock`) still keep every chunk to one sender, and the ledger keeps
every answer. The kernel drops the turn with a dead process, so a killed shard never blocks the next.

When to dispatch the next shard: the sending shard keeps its expected end in `<turn>.ends` (`EndsWriter`,
from the requests of its chunks that have ended and the rate they took: `Remaining`), and the worker takes
the next shard only once that end is near (`chunkwise.cluster.lookahead`): early enough for the next
process to be ready, late enough that a slow host does not hold a shard a faster one could start sooner.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Seconds a sending shard's slot must stay idle before the next shard gets the turn: longer than the
#: gap between one chunk's end and the next chunk's first request (milliseconds), shorter than a fast
#: engine's answer (~5 s at 256 in flight), so the next shard fills the slots its predecessor's tail frees.
SETTLE_S = 0.5


class HostTurn:
    """The turn on `path`: `take()` blocks until this process has it; `give_up()` lets the next shard in.
    Not re-entrant; `give_up` is safe to call twice and from any thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def take(self) -> float:
        """Wait for the host's turn; returns the seconds waited."""
        start = time.monotonic()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return time.monotonic() - start

    @property
    def held(self) -> bool:
        return self._fd is not None

    def give_up(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def free_slots(slots: threading.Semaphore) -> int:
    """Permits free now in the session's slot semaphore (`RunSession.slots`): slots no request holds."""
    return slots._value


class GiveUpWhenIdle:
    """A thread that gives up `turn` once `idle()` has held for `settle_s` without a break (checked every
    `poll_s`), then ends; `stop()` ends it early. With `idle = lambda: free_slots(session.slots) > 0`.

    Idleness counts only after `idle()` was first False (every slot taken): a shard's start (its chunk
    tasks created, its first rows read) leaves slots free for a moment, and giving up the turn then would
    let the next shard send beside it all along. A shard too small to fill its host's slots keeps the
    turn to its end."""

    def __init__(self, turn: HostTurn, idle: Callable[[], bool], *, settle_s: float = SETTLE_S,
                 poll_s: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        self.turn, self.idle, self.settle_s, self.poll_s, self.clock = turn, idle, settle_s, poll_s, clock
        self._stop = threading.Event()
        #: When the turn was given up by this watcher (clock s), None while held.
        self.gave_up_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="chunkwise-turn", daemon=True)

    def start(self) -> GiveUpWhenIdle:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        since: float | None = None
        armed = False  # counting starts once the shard has been busy (its first chunks take a moment to start)
        while not self._stop.wait(self.poll_s):
            if not self.idle():
                since, armed = None, True
                continue
            if not armed:
                continue
            now = self.clock()
            since = now if since is None else since
            if now - since >= self.settle_s:
                self.turn.give_up()
                self.gave_up_at = now
                return


class Remaining:
    """Seconds of sending a shard has left: the requests of its chunks not yet ended over the rate at which
    its ended chunks' requests went (requests / s since `start()`); None until a chunk has ended. Chunks
    run several at once, so the estimate errs late while they are all under way, never early."""

    def __init__(self, sizes: Sequence[int], clock: Callable[[], float] = time.monotonic) -> None:
        self.sizes, self.clock = list(sizes), clock
        self.total = sum(self.sizes)
        self._ended: list[Callable[[], bool]] = []
        self._started: float | None = None

    def start(self, ended: Sequence[Callable[[], bool]]) -> None:
        """Sending begins; `ended[k]()` says whether chunk k has ended (Prefect's futures, `done`)."""
        self._ended, self._started = list(ended), self.clock()

    def __call__(self) -> float | None:
        if self._started is None:
            return None
        done = sum(size for size, ended in zip(self.sizes, self._ended, strict=False) if ended())
        elapsed = self.clock() - self._started
        if done <= 0 or elapsed <= 0:
            return None
        return (self.total - done) / (done / elapsed)


def ends_path(turn: str | Path) -> Path:
    return Path(f"{turn}.ends")


def read_ends(turn: str | Path) -> float | None:
    """When the host's sending shard expects to end (epoch s), or None: nothing written, or its writer dead."""
    try:
        record = json.loads(ends_path(turn).read_text())
        os.kill(int(record["pid"]), 0)  # a killed shard's estimate says nothing
        return float(record["ends_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class EndsWriter:
    """A thread writing this process's expected end (`remaining()` from now, epoch s) to `<turn>.ends`
    every `every_s` (atomic replace), and removing the file at `stop()` unless another shard's is there."""

    def __init__(self, turn: str | Path, remaining: Callable[[], float | None], every_s: float = 1.0) -> None:
        self.path, self.remaining, self.every_s = ends_path(turn), remaining, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chunkwise-ends", daemon=True)

    def start(self) -> EndsWriter:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            left = self.remaining()
            if left is not None:
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}")
                tmp.write_text(json.dumps({"pid": os.getpid(), "ends_at": time.time() + left}))
                os.replace(tmp, self.path)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(self.path.read_text())["pid"] == os.getpid():
                self.path.unlink()


@contextmanager
def sending_turn(path: str | None, idle: Callable[[], bool], *, settle_s: float = SETTLE_S,
                 remaining: Callable[[], float | None] | None = None) -> Iterator[float]:
    """Hold the host's turn at `path` while the body sends (yields the seconds waited for it), giving it
    up early once `idle()` holds for `settle_s`, and keeping `<path>.ends` from `remaining` (seconds left,
    `Remaining`) for the worker; no turn (None): nothing to wait for, 0.0."""
    if not path:
        yield 0.0
        return
    turn = HostTurn(path)
    waited = turn.take()
    watcher = GiveUpWhenIdle(turn, idle, settle_s=settle_s).start()
    ends = EndsWriter(path, remaining).start() if remaining is not None else None
    try:
        yield waited
    finally:
        watcher.stop()
        if ends is not None:
            ends.stop()
        turn.give_up()
