"""Taking the (in-process) simulator down at a deterministic moment of a run.

`Outage` wraps every chat request of the run (through the factory seam, `tests.support.backends`): on the
call after the `after`-th one it stops the simulator before that request is sent, so the run meets a real
refused connection (ServerUnavailable). With `parallel=1` nothing else is in flight at that moment, so no
answer can be lost in transit. The simulator comes back after `back_after_s` seconds (a timer), or when
the test calls `sim.start()`.
"""

from __future__ import annotations

import threading

from tests.support.backends import wrap_chat


class Outage:
    def __init__(self, monkeypatch, sim, *, after: int, back_after_s: float | None = None) -> None:
        self.sim = sim
        self.calls = 0
        self.happened = threading.Event()
        lock = threading.Lock()

        def chat(client, request):
            with lock:
                self.calls += 1
                if self.calls == after + 1:
                    sim.stop()
                    self.happened.set()
                    if back_after_s is not None:
                        timer = threading.Timer(back_after_s, sim.start)
                        timer.daemon = True
                        timer.start()
            return client.chat(request)

        wrap_chat(monkeypatch, chat)
