"""Killing a `chunkwise run` child at seeded moments (tests/test_crash.py and bench/faults/ share these).

`kill_plan(seed)` draws the 10 moments; `KillOnRequest` fires the request-time ones from inside the
in-process simulator, so the kill lands in the middle of a request whatever the machine's load.
"""

from __future__ import annotations

import random
import subprocess
from typing import Any


class KillOnRequest:
    """Wraps the simulator's fault draw: at the n-th chat request of the armed session it SIGKILLs
    the client process, waits for it to be gone, and answers that request 500 -- nobody is left to
    read an answer, and the simulator must not count one as delivered. `monkeypatch` is pytest's
    fixture or a `pytest.MonkeyPatch()` (undo it to unwrap)."""

    def __init__(self, monkeypatch: Any) -> None:
        from chunkwise.harness.sim import completion

        self._real = completion.pick_fault
        self.proc: subprocess.Popen[Any] | None = None
        self.at = self.count = 0
        self.fired = False
        monkeypatch.setattr(completion, "pick_fault", self._draw)

    def arm(self, proc: subprocess.Popen[Any], at: int) -> None:
        self.proc, self.at, self.count, self.fired = proc, at, 0, False

    def _draw(self, options: Any, fingerprint: str, previous: int) -> str | None:
        self.count += 1
        if self.proc is not None and not self.fired and self.count == self.at:
            self.fired = True
            self.proc.kill()
            self.proc.wait()
            return "error"
        return self._real(options, fingerprint, previous)


def kill_plan(seed: int) -> list[tuple[str, Any, str]]:
    """(kind, argument, how the session is started) for the 10 killed sessions, drawn from `seed`:
    during start-up, in the middle of a request (six times), while the last checkpoint is being
    written, and twice during aggregation (`tests.support.crash_child` arms the last three)."""
    rng = random.Random(seed)
    request = lambda: ("request", rng.randint(1, 6), rng.choice(["run", "resume"]))  # noqa: E731
    return [
        ("after", round(rng.uniform(0.3, 1.5), 2), "run"),  # seconds after spawn: start-up, staging
        request(), request(), request(), request(), request(), request(),
        ("checkpoint", None, "run"),  # the last chunk's checkpoint
        ("results", None, "run"),
        ("stats", None, "resume"),
    ]
