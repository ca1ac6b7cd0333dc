"""The head start: `chunkwise run` sends the run's first chunks itself while Prefect's API comes up.

Why: without a configured API, Prefect's temporary API server takes most of the time from the command to
the first request (a cold process importing Prefect's server: 8-10 s on a 2-core machine;
bench/results/startup.md). Nothing about sending needs Prefect, so the CLI starts sending as soon as the
preflight has passed, and the flow takes over when it starts.

What it does (`HeadStart.begin`, called by `chunkwise.commands.runner.execute` once every check passed, so a
bad input or an unreachable server is still a one-line error before anything is sent): it writes the
manifest with this session's entry (before any request: `chunkwise.results.sessions` charges a ledger line to
the session that started before it, so the head start's answers and time count once, in this session), opens
the run's `RunSession`, loads the model (`chunkwise.run.preload`, as the flow's telemetry would), then runs
chunks in plan order with the flow's own chunk code (`chunkwise.run.chunk.run_chunk`: the same ledger, the
same checkpoint), as many at once as the flow would run (`chunk_workers`).

Hand-over: the flow uses this session (one slot semaphore and one sender pool, so the head start and the flow
together never have more than `parallel` requests in flight), calls `hand_over()` before it maps its chunk
tasks (no chunk is begun here after that), and each chunk task asks `run_or_adopt`: a chunk the head start
began is waited for and its summary returned (or its error raised, once: a retry of the task then runs the
chunk itself, sending only what the ledger lacks); every other chunk runs as before. So every chunk has its
task run in Prefect's UI, and a head-started one completes with "sent by the head start" in its log.

Crash safety is the chunk code's own: every answer is in the ledger before its slot is given back, so a kill
during the head start, resumed, sends each unanswered request once and at most `parallel` answers in flight
again. A head start is only for a single-host run with something to send; no Prefect is imported here.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Any

from chunkwise.logs import RunLogger, logger
from chunkwise.params import RunParams
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.chunk import run_chunk
from chunkwise.run.preload import preload
from chunkwise.run.prepare import PreparedRun, record_session
from chunkwise.run.session import RunSession, chunk_workers, largest
from chunkwise.settings import get_settings
from chunkwise.store.layout import run_paths
from chunkwise.store.records import ChunkSummary

#: What the preload recorded (stats.json's `model_load.preload`) and the memory view after it.
Preloaded = tuple[dict[str, Any], dict[str, Any] | None]

#: The head start of the run the CLI is about to hand to the flow (set by `commands/runner.execute` around the
#: flow, as `stop_requests` is: the flow runs in a copy of the caller's context); None: none.
head_starts: ContextVar[HeadStart | None] = ContextVar("chunkwise_head_start", default=None)


def log() -> RunLogger:
    return logger("chunkwise.run.headstart")


def head_start_for(params: RunParams) -> HeadStart | None:
    """The caller's head start when it is of this run (the same run directory), else None."""
    head = head_starts.get()
    if head is None or not params.run_name:
        return None
    wanted = run_paths(params.output_dir, params.run_name).root.resolve()
    return head if head.prepared.ctx.dir.resolve() == wanted else None


class HeadStart:
    """The chunks begun before the flow started, and the session they run on (see the module docstring)."""

    def __init__(self, prepared: PreparedRun, specs: list[ChunkSpec], session: RunSession, *,
                 first_sent: threading.Event | None = None) -> None:
        self.prepared, self.specs, self.session = prepared, specs, session
        #: Set as the first chunk's first request goes out (the session's `first_request`), or when the head start
        #: ended without one: the CLI's critical path is over, Prefect may be imported in this process
        #: (`EarlyApi`).
        self.first_sent = first_sent if first_sent is not None else threading.Event()
        self._workers = chunk_workers(prepared.ctx.params, get_settings(), largest(specs))
        self._lock = threading.Lock()
        self._next = 0
        self._open = True
        self._begun: dict[int, Future[ChunkSummary]] = {}
        self._futures: list[Future[ChunkSummary]] = []
        self._loaded = threading.Event()
        self._preloaded: Preloaded | None = None
        self._preload_error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False

    @classmethod
    def begin(cls, prepared: PreparedRun, specs: list[ChunkSpec], manifest: dict[str, Any], *,
              stop: threading.Event, first_sent: threading.Event | None = None) -> HeadStart:
        """Record the session in the manifest, open the run's session and start sending (in threads)."""
        record_session(prepared.ctx, manifest)
        first_sent = first_sent if first_sent is not None else threading.Event()
        session = RunSession(prepared.ctx, stop=stop, first_request=first_sent)  # set by the first chat request
        head = cls(prepared, specs, session, first_sent=first_sent)
        session.head_start = head
        head.start()
        return head

    def start(self) -> HeadStart:
        thread = threading.Thread(target=self._run, name="chunkwise-head-start", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def _run(self) -> None:
        try:
            try:
                self._preloaded = preload(self.session)  # a failed load or a spill stops the run before any chunk
                self.session.reloads.expect(self._preloaded[1])
            except BaseException as exc:  # noqa: BLE001 - raised in the flow by `loaded()`, as its own preload's
                self._preload_error = exc
                with self._lock:
                    self._open = False
                return
            finally:
                self._loaded.set()
            workers = [threading.Thread(target=self._work, name=f"chunkwise-head-start-{i}", daemon=True)
                       for i in range(self._workers)]
            with self._lock:
                self._threads.extend(workers)
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            self.first_sent.set()  # also when it ended without beginning a chunk (a failed load, a stop)

    def _claim(self) -> tuple[ChunkSpec, Future[ChunkSummary]] | None:
        with self._lock:
            rt = self.session
            if not self._open or self._next >= len(self.specs) or rt.stop.is_set() or rt.fatal is not None:
                return None
            spec = self.specs[self._next]
            self._next += 1
            future: Future[ChunkSummary] = Future()
            self._begun[spec.index] = future
            self._futures.append(future)
            return spec, future

    def _work(self) -> None:
        while (claim := self._claim()) is not None:
            spec, future = claim
            try:
                summary = run_chunk(self.session, spec)
            except BaseException as exc:  # noqa: BLE001 - handed to the chunk's task, which raises it
                future.set_exception(exc)
            else:
                if not summary.get("from_checkpoint"):  # a checkpointed chunk (a resume) was only read here
                    summary["head_start"] = True
                future.set_result(summary)

    def loaded(self) -> Preloaded:
        """What the preload recorded (waits for it); raises the preload's error, as the flow's would."""
        self._loaded.wait()
        if self._preload_error is not None:
            raise self._preload_error
        assert self._preloaded is not None  # set whenever there was no error
        return self._preloaded

    def hand_over(self) -> None:
        """The flow takes over: no chunk is begun here any more."""
        with self._lock:
            self._open = False

    def begun(self) -> list[int]:
        """Indexes of the chunks begun here and not yet adopted."""
        with self._lock:
            return sorted(self._begun)

    def adopt(self, index: int) -> ChunkSummary | None:
        """Chunk `index`'s summary when the head start began it (waiting for it to end), else None. Its error,
        if it failed, is raised here once; a second call (a retry of the chunk's task) returns None."""
        with self._lock:
            future = self._begun.pop(index, None)
        return None if future is None else future.result()

    def close(self) -> None:
        """The run ends in this process (the flow's end, or the CLI's when the flow never ran): no chunk is begun
        any more; chunks still under way (nobody adopted them: the flow failed or never started) are stopped and
        their requests in flight get `stop_grace_s` seconds to be recorded; then the session is closed (which
        releases the run's lock). Closing twice does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed, self._open = True, False
            running = any(not f.done() for f in self._futures)
            threads = list(self._threads)
        if running:
            self.session.stop.set()
        deadline = time.monotonic() + get_settings().stop_grace_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.session.close()

    def __enter__(self) -> RunSession:
        """The flow's `with`: the session, closed (`close`) when the flow ends."""
        return self.session

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_or_adopt(session: RunSession, spec: ChunkSpec) -> ChunkSummary:
    """The chunk task's body: the head start's result for a chunk it began (nothing is sent again), else
    `run_chunk`."""
    head = session.head_start
    summary = head.adopt(spec.index) if head is not None else None
    if summary is None:
        return run_chunk(session, spec)
    if summary.get("head_start"):
        log().info("%s: sent by the head start before the flow started (%d sent, %d ok, %d failed); adopted, "
                   "nothing sent again", spec.label, summary.get("sent", 0), summary.get("ok", 0),
                   summary.get("failed", 0))
    return summary
