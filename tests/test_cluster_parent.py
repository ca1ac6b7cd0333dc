"""The parent's shard supervision with a fake dispatcher: launch, re-dispatch, bounded attempts,
re-attach by idempotency key after a restart (no Prefect)."""

import pytest

from chunkwise.cluster.parent import ShardsUnfinished, supervise
from chunkwise.plan.shards import Shard


class FakePrefect:
    """Runs keyed by idempotency key (Prefect returns the existing run for a key it has seen)."""

    def __init__(self, script):
        self.script = script  # key -> list of states the run goes through, then it stays at the last
        self.runs = {}  # key -> run id
        self.polls = {}
        self.launches = []
        self.done_chunks = set()
        self.completes = {}  # key -> chunks checkpointed when the run completes

    def launch(self, shard, attempt, key, *, retry):
        self.launches.append((key, retry))
        return self.runs.setdefault(key, f"run-{len(self.runs)}-{key}")

    def state(self, run_id):
        key = run_id.split("-", 2)[2]
        n = self.polls[key] = self.polls.get(key, 0) + 1
        states = self.script.get(key, ["RUNNING", "COMPLETED"])
        state = states[min(n, len(states)) - 1]
        if state == "COMPLETED":
            self.done_chunks |= set(self.completes.get(key, ()))
        return state


SHARDS = [Shard(index=0, chunks=(0, 1), requests=20), Shard(index=1, chunks=(2,), requests=10)]


def test_failed_and_crashed_shards_are_redispatched_on_the_retry_queue_until_checkpointed():
    fake = FakePrefect({"r:0:0": ["RUNNING", "CRASHED"], "r:1:0": ["FAILED"], "r:1:1": ["COMPLETED"]})
    fake.completes = {"r:0:1": (0, 1), "r:1:1": (2,)}
    tracks = supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, sleep=lambda s: None)
    assert [(t.shard.index, t.attempt, t.done) for t in tracks] == [(0, 1, True), (1, 1, True)]
    assert fake.launches == [("r:0:0", False), ("r:1:0", False), ("r:1:1", True), ("r:0:1", True)]


def test_a_completed_shard_that_skipped_a_locked_chunk_is_dispatched_again():
    fake = FakePrefect({"r:0:0": ["COMPLETED"]})
    fake.completes = {"r:0:0": (0,), "r:0:1": (1,), "r:1:0": (2,)}
    tracks = supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, sleep=lambda s: None)
    assert tracks[0].attempt == 1 and all(t.done for t in tracks)


def test_attempts_are_bounded_and_the_error_says_what_to_do():
    fake = FakePrefect({f"r:0:{a}": ["FAILED"] for a in range(3)})
    fake.completes = {"r:1:0": (2,)}
    with pytest.raises(ShardsUnfinished, match=r"shard 0 \(FAILED after 3 attempts\).*same run name"):
        supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, max_attempts=3, sleep=lambda s: None)
    assert [k for k, _ in fake.launches if k.startswith("r:0:")] == ["r:0:0", "r:0:1", "r:0:2"]


def test_a_restarted_parent_reattaches_to_the_runs_it_launched_and_skips_finished_shards():
    fake = FakePrefect({"r:0:0": ["FAILED"], "r:0:1": ["RUNNING", "COMPLETED"]})
    fake.completes = {"r:0:1": (0, 1)}
    fake.done_chunks = {2}  # shard 1 finished before the restart
    first = dict(fake.runs)
    fake.runs = {"r:0:0": "run-0-r:0:0", "r:0:1": "run-1-r:0:1"}  # what the first parent launched
    tracks = supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, sleep=lambda s: None)
    assert first == {}
    assert [k for k, _ in fake.launches] == ["r:0:0", "r:0:1"]  # same keys: no new run, no duplicate
    assert set(fake.runs) == {"r:0:0", "r:0:1"}
    assert tracks[1].state == "SKIPPED" and all(t.done for t in tracks)
