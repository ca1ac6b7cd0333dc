"""One run's live state in this process (`RunSession`), opened by the flow that owns the run and
closed when the run ends here: the server's backend and client, the server slots, the token estimator, the
circuit breaker, the reload watch, the stop flag, the first fatal error, and the run directory's lock.

Nothing here is global or pickled. The flow hands the session to every chunk task as a parameter
(Prefect's thread-pool task runner passes it through as it is), and what the end of a run needs is
derived from the run's own records (`chunkwise.results.finish`), never read back from a session.

The stop flag: a process that owns the terminal (the CLI) creates one `threading.Event`, sets it
from its signal handler, and hands it to the flow with `stop_requests.set(event)`: a ContextVar,
because the flow runs in a copy of the caller's context (`commands/runner.run_off_main_thread`)
and Prefect's task threads in a copy of the flow's. A run without such a caller (a deployment)
gets its own event, which only a fatal error can end early.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING

from chunkwise.backend import Backend, ChatClient
from chunkwise.params import RunParams
from chunkwise.run.breaker import CircuitBreaker
from chunkwise.run.context import RunContext
from chunkwise.run.reloads import ReloadWatch
from chunkwise.servers import backend_for
from chunkwise.settings import WHOLE_ANSWERS_FROM_PARALLEL, Settings, get_settings
from chunkwise.store import lock as runlock
from chunkwise.tokens import TokenEstimator

if TYPE_CHECKING:
    from chunkwise.plan.chunks import ChunkSpec
    from chunkwise.run.headstart import HeadStart

#: Builds the run's client from its context (`ctx.params.api`, `ctx.host`); the seam tests use.
ClientFactory = Callable[[RunContext], ChatClient]

#: The stop flag of the caller that owns the terminal (see the module docstring); None: none.
stop_requests: ContextVar[threading.Event | None] = ContextVar("chunkwise_stop_requests", default=None)


def streams_answers(parallel: int, settings: Settings) -> bool | None:
    """Whether the run reads answers token by token (`Settings.stream`): None leaves it to the backend
    (Ollama streams; --api openai follows CHUNKWISE_OPENAI_STREAM)."""
    if settings.stream == "on":
        return True
    if settings.stream == "off" or parallel >= WHOLE_ANSWERS_FROM_PARALLEL:
        return False
    return None


def default_client(ctx: RunContext) -> ChatClient:
    """The run's client (its backend's, `chunkwise.servers`) with the settings' timeouts, a connection
    pool a little above `parallel`, and whole answers or streamed ones (`streams_answers`)."""
    s = get_settings()
    return backend_for(ctx.params.api).client(ctx.host, s, connect_timeout_s=s.connect_timeout_s,
                                              read_timeout_s=s.read_timeout_s, max_connections=ctx.params.parallel + 4,
                                              stream=streams_answers(ctx.params.parallel, s))


def largest(specs: Sequence[ChunkSpec]) -> int:
    """Rows of the largest chunk (at least 1): what `chunk_workers` sizes by."""
    return max((s.size for s in specs), default=1)


def chunk_workers(params: RunParams, settings: Settings, chunk_size: int) -> int:
    """Chunk tasks run at once (Prefect's default pool is unbounded: 1,532 chunks would mean 1,532 threads
    and as many task runs open on its API).

    Conversation mode holds one worker per conversation for its whole length, so `parallel` workers keep
    every server slot busy. Independent mode sends every chunk's rows through the run's one sender pool
    (`RunSession.senders`); enough chunks run to keep twice `parallel` rows queued there, so the slots stay
    full across a chunk's end (8 chunks of 113 rows for 256 in flight). The setting is the floor in both."""
    if params.mode == "conversation":
        return max(settings.chunk_workers, params.parallel)
    return max(settings.chunk_workers, -(-2 * params.parallel // max(1, chunk_size)) + 1)


class RunSession:
    """Per-process state shared by all chunks of one run; a context manager that closes the client
    and releases the run directory's lock (taken by `prepare_run`) on exit."""

    def __init__(self, ctx: RunContext, *, client_factory: ClientFactory = default_client,
                 stop: threading.Event | None = None, first_request: threading.Event | None = None) -> None:
        self.ctx = ctx
        #: The run's server kind (`chunkwise.servers.backend_for`), chosen once.
        self.backend: Backend = backend_for(ctx.params.api)
        self.client: ChatClient = client_factory(ctx)
        #: The backend's own fields for every request of the run (`ChatRequest.extras`).
        self.extras = self.backend.request_extras(think=ctx.think, keep_alive=ctx.params.keep_alive)
        #: One permit per server slot (`parallel`): a request, or a whole conversation, holds one.
        self.slots = threading.BoundedSemaphore(ctx.params.parallel)
        self.estimator = TokenEstimator(ctx.chars_per_token)
        #: Stops the run when the server keeps failing the same way (`chunkwise.run.breaker`).
        self.breaker = CircuitBreaker(ctx.params.breaker_threshold, ctx.params.parallel)
        #: Answers that waited for a model (re)load mid-run (`chunkwise.run.reloads`).
        self.reloads = ReloadWatch(ctx.params.num_ctx)
        self.stop = stop if stop is not None else (stop_requests.get() or threading.Event())
        #: Set as the run's first chat request of this session goes out (`chunkwise.run.send`): the CLI imports
        #: Prefect only then (`chunkwise.run.headstart`), so that the import does not delay that request.
        self.first_request = first_request if first_request is not None else threading.Event()
        #: The first fatal error (a fatal answer, or a run directory that cannot be written); once
        #: set, every chunk stops sending.
        self.fatal: Exception | None = None
        #: The CLI's head start that opened this session and began its first chunks (`chunkwise.run.headstart`):
        #: a chunk task adopts what it began instead of sending it again; None for a session the flow opened.
        self.head_start: HeadStart | None = None
        self._senders: ThreadPoolExecutor | None = None
        self._senders_lock = threading.Lock()

    @property
    def senders(self) -> ThreadPoolExecutor:
        """The threads that send independent requests, for every chunk of the run in this process: twice
        `parallel`, so that while some requests wait out a retry's backoff (their slot given back) others
        are ready to take the freed slots; the slot semaphore bounds what is on the wire. Made on first use
        (a conversation run has none)."""
        with self._senders_lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(max_workers=2 * self.ctx.params.parallel,
                                                   thread_name_prefix="chunkwise-send")
            return self._senders

    def close(self) -> None:
        """Close the client and give up the run directory (the run is over in this process). Every chunk
        has waited for its senders by then, so the pool has nothing running."""
        try:
            if self._senders is not None:
                self._senders.shutdown(wait=True, cancel_futures=True)
            self.client.close()
        finally:
            runlock.release(self.ctx.dir)

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
