"""The parent's supervision of its shards (no Prefect here: the dispatcher is injected).

Each shard is launched as one flow run of the shard deployment with the idempotency key
`<run>:<shard>:<attempt>`. Prefect keeps (flow, idempotency key) unique and returns the existing
flow run for a key it has seen (prefect 3.9.1 `src/prefect/server/models/flow_runs.py`,
`create_flow_run`), so a parent killed and re-run with the same run name walks the same keys and
re-attaches to every shard run it had launched (attempt 0, then the re-dispatches it had made) instead
of launching duplicates.

A shard whose run ends (Completed, Failed, Crashed, Cancelled) while some of its chunks still lack a
valid checkpoint is re-dispatched with the next attempt number on the retry queue (higher priority,
so the re-dispatch does not wait behind fresh shards), at most `max_attempts` times in all; a
Completed shard can leave chunks behind only when another live process held their locks. The parent
never decides whether a request was answered: the ledgers and checkpoints on shared storage do.

A time-sized plan (`chunkwise.plan.shards`) is not whole at the start: `extend` is asked on every poll
for shards planned since (the rest of the run, once a host's rate is measured), which are launched like
the first ones; it answers None once nothing more will come.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chunkwise.errors import ShardsUnfinished
from chunkwise.plan.shards import Shard

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


class Dispatcher(Protocol):
    """Launches shard runs and reads their state types (Prefect's `StateType` names). It may also
    offer `states(run_ids) -> {run_id: state}`, many runs in one call (`read_states`)."""

    def launch(self, shard: Shard, attempt: int, key: str, *, retry: bool) -> str: ...

    def state(self, run_id: str) -> str: ...

    def mark_crashed(self, run_id: str, message: str) -> None: ...


@dataclass
class ShardTrack:
    shard: Shard
    attempt: int = 0
    run_id: str = ""
    state: str = "PENDING"
    done: bool = False
    #: When this attempt was first seen Running (supervisor clock, s).
    running_since: float | None = None
    #: When this attempt was first seen Pending: a worker took it and is starting its process (supervisor clock, s).
    pending_since: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def idempotency_key(run_name: str, shard: int, attempt: int) -> str:
    return f"{run_name}:{shard}:{attempt}"


def supervise(run_name: str, shards: list[Shard], dispatcher: Dispatcher, chunk_done: Callable[[int], bool], *,
              alive: Callable[[Shard, int], bool] | None = None, lost_after_s: float = 30.0,
              pending_lost_after_s: float | None = None,
              max_attempts: int = 4, poll_s: float = 2.0, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic,
              on_change: Callable[[ShardTrack], None] | None = None,
              extend: Callable[[bool], list[Shard] | None] | None = None) -> list[ShardTrack]:
    """Launch (or re-attach to) every shard, re-dispatch those that end with chunks unsent, and return
    once every shard's chunks are checkpointed; raise `ShardsUnfinished` when a shard used up
    `max_attempts`. A shard whose chunks are already all checkpointed is not launched at all.

    A run whose process died without reporting (its worker stopped with it, or its machine vanished)
    stays Running on the server forever. `alive(shard, attempt)` says whether the run's process still
    holds its shard lock (`chunkwise.store.chunklock.shard_lock_path`; the kernel drops it with the
    process); a run Running for `lost_after_s` whose lock is free is marked Crashed and re-dispatched.

    A run can also stay Pending forever: its worker set Pending and started its process, then the process
    died before it reported Running (it could not reach the API: a host cut off by a network partition,
    bench/faults/partition.py) and the worker's own report of the crash was lost the same way. Prefect's
    server has no service that moves such a run (its late-runs service watches Scheduled runs only), so a
    run Pending for `pending_lost_after_s` (default 4 x `lost_after_s`: a process normally reports Running
    within seconds) whose lock is free is marked Crashed and re-dispatched too. Should its process still
    come up, the chunk locks keep it from sending what the re-dispatched attempt sends.

    `extend(all_done)` (see the module docstring) gets whether every shard launched so far is done.
    """
    pending_grace = 4 * lost_after_s if pending_lost_after_s is None else pending_lost_after_s
    tracks: list[ShardTrack] = []
    more = extend is not None
    _add(run_name, tracks, shards, dispatcher, chunk_done)
    while True:
        if more and extend is not None:
            planned = extend(all(t.done for t in tracks))
            more = planned is not None
            _add(run_name, tracks, planned or [], dispatcher, chunk_done)
        exhausted = []
        states = read_states(dispatcher, [t.run_id for t in tracks if not t.done])
        for track in tracks:
            if track.done:
                continue
            state = states[track.run_id]
            if state == "RUNNING":
                track.running_since = track.running_since if track.running_since is not None else clock()
                if alive is not None and clock() - track.running_since >= lost_after_s and \
                        not alive(track.shard, track.attempt):
                    dispatcher.mark_crashed(track.run_id, f"shard {track.shard.index} attempt {track.attempt}: its "
                                            "process is gone (its shard lock is free); re-dispatched by the parent")
                    state = "CRASHED"
            elif state == "PENDING":
                track.pending_since = track.pending_since if track.pending_since is not None else clock()
                if alive is not None and clock() - track.pending_since >= pending_grace and \
                        not alive(track.shard, track.attempt):
                    dispatcher.mark_crashed(track.run_id, f"shard {track.shard.index} attempt {track.attempt}: Pending "
                                            f"for {pending_grace:g} s and never started (its host may be cut off "
                                            "from the API); re-dispatched by the parent")
                    state = "CRASHED"
            if state != track.state:
                track.state = state
                track.history.append({"attempt": track.attempt, "run_id": track.run_id, "state": state,
                                      "at": time.time()})
                if on_change:
                    on_change(track)
            if state not in FINAL_STATES:
                continue
            if all(chunk_done(c) for c in track.shard.chunks):
                track.done = True
            elif track.attempt + 1 >= max_attempts:
                exhausted.append(track)
            else:
                track.attempt += 1
                _launch(run_name, track, dispatcher, retry=True)
        if exhausted:
            names = ", ".join(f"shard {t.shard.index} ({t.state} after {t.attempt + 1} attempts)" for t in exhausted)
            raise ShardsUnfinished(f"{names}: chunks left unsent; check the hosts' workers and Ollama, then run again "
                                   "with the same run name (answered requests are never sent again)")
        if not more and all(t.done for t in tracks):
            return tracks
        sleep(poll_s)


def _add(run_name: str, tracks: list[ShardTrack], shards: list[Shard], dispatcher: Dispatcher,
         chunk_done: Callable[[int], bool]) -> None:
    """Track `shards` and launch those with a chunk still unsent."""
    for shard in shards:
        track = ShardTrack(shard)
        tracks.append(track)
        if all(chunk_done(c) for c in shard.chunks):
            track.done, track.state = True, "SKIPPED"
            continue
        _launch(run_name, track, dispatcher, retry=False)


def read_states(dispatcher: Dispatcher, run_ids: list[str]) -> dict[str, str]:
    """Every run's state type: in one call per poll when the dispatcher reads many runs at once
    (`states`), else one call per run. One call per unfinished shard every `poll_s` grows with the run
    (189 shards of 900 requests for 170,000) and loads the Prefect server the workers also need."""
    if not run_ids:
        return {}
    many: Callable[[list[str]], dict[str, str]] | None = getattr(dispatcher, "states", None)
    if many is not None:
        return many(run_ids)
    return {run_id: dispatcher.state(run_id) for run_id in run_ids}


def _launch(run_name: str, track: ShardTrack, dispatcher: Dispatcher, *, retry: bool) -> None:
    """Launch the track's current attempt; a key Prefect has seen returns that run (re-attach), and a
    run that is already final is followed by the next attempt's key, walking a restarted parent to
    the newest attempt its predecessor launched."""
    track.run_id = dispatcher.launch(track.shard, track.attempt, idempotency_key(run_name, track.shard.index,
                                                                                   track.attempt), retry=retry)
    track.state = "PENDING"
    track.running_since = track.pending_since = None
