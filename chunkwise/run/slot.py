"""One independent-mode request's hold on the run's server slots (`RunSession.slots`, `parallel` of them).

The request takes a slot for each attempt and gives it back while it waits out a retry's backoff (another
request can use the server meanwhile), but an answered request keeps its slot until its record is in the
ledger. A slot given back on the answer, before the record's write and fsync, lets the next request go on
the wire while that answer exists only in memory: a kill (SIGKILL, the OOM killer, a power cut) then loses
up to `parallel` answers in flight plus every answer still waiting for its fsync, and a resume pays for all
of them again. Held to the record, what a kill can cost is bounded by the slots: at most `parallel`
requests on the wire or answered but unrecorded. The price is the slot's idle time during the record's
fsync (group commit keeps it short), milliseconds against a generation's seconds on a real server.
"""

from __future__ import annotations

import threading


class SlotHold:
    """`with hold:` around each attempt (taken once, kept after a successful attempt, given back when the
    attempt raised); `release()` once the request's outcome is recorded, or it gave up."""

    __slots__ = ("_held", "_slots")

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self._held = False

    def __enter__(self) -> None:
        if not self._held:
            self._slots.acquire()
            self._held = True

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if kind is not None:  # a failed attempt: free the slot for the backoff
            self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()
