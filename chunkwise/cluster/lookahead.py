"""The Prefect worker process of `chunkwise worker` when shards are dispatched ahead: Prefect's process
worker, taking the next shard only when the one sending is near its end.

Why: dispatched ahead, a worker holds two shard runs (`--limit 2`): the one sending and the next, whose
process starts and checks the host while the first sends (`chunkwise.cluster.turn`). Prefect's own worker
takes as many scheduled runs as its limit has room for in one poll (prefect 3.9.1 `workers/base.py`,
`_submit_scheduled_flow_runs`): at a run's start the first worker to poll took two of the first shards
while another host got none (a three-host test with three shards: one host sent nothing), and a slow host
held a second shard for its whole slow shard while the fast hosts ran out of work (a host at a quarter of
the others' rate: the run a slow shard longer). This worker takes at most one run per poll, and a second
one only once the sending shard expects to end within `LEAD_S` (`chunkwise.cluster.turn.read_ends`; no
estimate yet: not yet). Fast hosts get there sooner, so the next shard goes to the host that will start
it first, as without dispatch ahead, but its process is ready when the host is.

Run as `python -m chunkwise.cluster.lookahead worker start --pool P --limit 2 ...` (Prefect's own command
line, everything else unchanged: signals, heartbeats, the pool's job template). It replaces Prefect's
`process` worker type in this process only (prefect's type registry keeps the last class registered for a
key: `utilities/dispatch.py`, `register_type`); the turn file comes from CHUNKWISE_WORKER_TURN.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Any

from chunkwise.cluster.turn import read_ends

#: Seconds before the sending shard's expected end at which the next one is taken: more than a shard
#: process needs from the worker's poll to sending (poll <= 1 s, the process start and imports, the run's
#: context, the host's check: 5.2 s in all on an idle machine with Prefect 3.9.1, bench/results/scaleout.md;
#: 10-20 s on this 2-core machine under load), and short against a shard of a few minutes (`--shard-seconds`
#: 180), so a shard waits on its host for at most about this long.
LEAD_S = 30.0


def runs_to_take(held: int, ends_in: float | None, lead_s: float = LEAD_S) -> int:
    """Shard runs to take in this poll: one when the worker holds none; one more only once the sending shard
    expects to end within `lead_s` seconds (`ends_in`; None: no estimate yet); else none. The limit (2) is
    Prefect's to enforce."""
    return 1 if held == 0 or (ends_in is not None and ends_in <= lead_s) else 0


@functools.cache
def worker_class() -> type[Any]:
    """The worker class, defined (and so registered as Prefect's `process` type) on the first call: Prefect
    is imported here, not when this module is, as every logic module of chunkwise (tests/test_rules.py)."""
    from prefect.workers.process import ProcessWorker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the existing type will be overridden": on purpose, see the docstring

        class LookaheadProcessWorker(ProcessWorker):
            """Prefect's process worker with `runs_to_take` applied to every poll's scheduled runs."""

            async def _submit_scheduled_flow_runs(self, flow_run_response: list[Any]) -> list[Any]:
                held = int(self._limiter.borrowed_tokens) if self._limiter is not None else 0
                turn = os.environ.get("CHUNKWISE_WORKER_TURN")
                ends_at = read_ends(turn) if turn else None
                take = runs_to_take(held, None if ends_at is None else ends_at - time.time())
                return await super()._submit_scheduled_flow_runs(flow_run_response[:take])

    return LookaheadProcessWorker


def main() -> None:
    worker_class()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
