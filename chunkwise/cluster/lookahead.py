"""The Prefect worker process of `chunkwise worker` when shards are dispatched ahead: Prefect's process
worker, taking a second shard only while its first one sends.

Why: dispatched ahead, a worker holds two shard runs (`--limit 2`): the one sending and the next, whose
process starts and checks the host while the first sends (`chunkwise.cluster.turn`). Prefect's own worker
takes as many scheduled runs as its limit has room for in one poll (prefect 3.9.1 `workers/base.py`,
`_submit_scheduled_flow_runs`), so at a run's start the first worker to poll took two of the first shards
while another host got none (a three-host test with three shards: one host sent nothing). This worker
takes at most one run per poll, and a second one only while the host's turn is held, i.e. while a shard
of this worker sends: by then every other worker has had its polls (one a second,
`chunkwise.cluster.worker.WORKER_QUERY_SECONDS`) during the first shard's process start and preflight.

Run as `python -m chunkwise.cluster.lookahead worker start --pool P --limit 2 ...` (Prefect's own command
line, everything else unchanged: signals, heartbeats, the pool's job template). It replaces Prefect's
`process` worker type in this process only (prefect's type registry keeps the last class registered for a
key: `utilities/dispatch.py`, `register_type`); the turn file comes from CHUNKWISE_WORKER_TURN.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from typing import Any

from prefect.workers.process import ProcessWorker


def turn_busy(path: str | None) -> bool:
    """True while some process holds the host's turn at `path` (`HostTurn.take`): a shard is sending. A
    missing path or file: False. The probe holds the lock for microseconds; a shard waiting in `take` gets
    it right after."""
    if not path:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def runs_to_take(held: int, sending: bool) -> int:
    """Shard runs to take in this poll: one when the worker holds none, one more only while its shard
    sends (`sending`), else none; the limit (2) is Prefect's to enforce."""
    return 1 if held == 0 or sending else 0


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "the existing type will be overridden": on purpose, see the docstring

    class LookaheadProcessWorker(ProcessWorker):
        """Prefect's process worker with `runs_to_take` applied to every poll's scheduled runs."""

        async def _submit_scheduled_flow_runs(self, flow_run_response: list[Any]) -> list[Any]:
            held = int(self._limiter.borrowed_tokens) if self._limiter is not None else 0
            take = runs_to_take(held, turn_busy(os.environ.get("CHUNKWISE_WORKER_TURN")))
            return await super()._submit_scheduled_flow_runs(flow_run_response[:take])


def main() -> None:
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
