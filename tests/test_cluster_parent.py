"""The parent's shard supervision with a fake dispatcher: launch, re-dispatch, bounded attempts,
re-attach by idempotency key after a restart (no Prefect)."""

from pathlib import Path

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
        self.crashed = []

    def launch(self, shard, attempt, key, *, retry):
        self.launches.append((key, retry))
        return self.runs.setdefault(key, f"run-{len(self.runs)}-{key}")

    def mark_crashed(self, run_id, message):
        self.crashed.append((run_id, message))
        self.script[run_id.split("-", 2)[2]] = ["CRASHED"]
        self.polls[run_id.split("-", 2)[2]] = 0

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


def test_the_shard_deployment_file_names_the_shard_flow_and_the_dispatcher_targets_it():
    import yaml

    from flows.shard import FLOW_NAME, shard
    from tasks.dispatch import QUEUE, SHARD_DEPLOYMENT

    (deployment,) = yaml.safe_load((Path(__file__).parents[1] / "deployments/cluster.yaml").read_text())["deployments"]
    assert deployment["entrypoint"] == "flows/shard.py:shard" and shard.name == FLOW_NAME
    assert f"{FLOW_NAME}/{deployment['name']}" == SHARD_DEPLOYMENT
    assert deployment["work_pool"]["work_queue_name"] == QUEUE


def test_a_run_left_running_by_a_dead_process_is_marked_crashed_and_redispatched():
    fake = FakePrefect({"r:0:0": ["RUNNING"]})  # its process died: Running forever on the server
    fake.completes = {"r:0:1": (0, 1), "r:1:0": (2,)}
    now = [0.0]

    def sleep(s):
        now[0] += s

    tracks = supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, sleep=sleep, clock=lambda: now[0],
                       alive=lambda shard, attempt: shard.index != 0 or attempt != 0, lost_after_s=30, poll_s=5)
    assert [run for run, _ in fake.crashed] == [fake.runs["r:0:0"]]
    assert "shard 0 attempt 0: its process is gone" in fake.crashed[0][1]
    assert 30 <= now[0] <= 40  # noticed within one poll of the grace
    assert tracks[0].attempt == 1 and all(t.done for t in tracks)


def test_a_live_slow_shard_is_left_alone():
    fake = FakePrefect({"r:0:0": ["RUNNING"] * 50 + ["COMPLETED"]})
    fake.completes = {"r:0:0": (0, 1), "r:1:0": (2,)}
    now = [0.0]
    supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, sleep=lambda s: now.__setitem__(0, now[0] + s),
              clock=lambda: now[0], alive=lambda shard, attempt: True, lost_after_s=30, poll_s=5)
    assert fake.crashed == [] and now[0] >= 200


def test_a_run_left_pending_by_a_process_that_never_started_is_marked_crashed_and_redispatched():
    # its worker set Pending and started the process, which died before it reported Running (its host cut
    # off from the API), and the worker's crash report was lost too: Pending forever on the server
    fake = FakePrefect({"r:0:0": ["PENDING"]})
    fake.completes = {"r:0:1": (0, 1), "r:1:0": (2,)}
    now = [0.0]

    def sleep(s):
        now[0] += s
        assert now[0] < 3600, "the parent still waits for a run that will never start"

    tracks = supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, sleep=sleep, clock=lambda: now[0],
                       alive=lambda shard, attempt: False, lost_after_s=30, poll_s=5)
    assert [run for run, _ in fake.crashed] == [fake.runs["r:0:0"]]
    assert "shard 0 attempt 0: Pending for 120 s and never started" in fake.crashed[0][1]
    assert 120 <= now[0] <= 130  # four times the Running grace, noticed within one poll
    assert ("r:0:1", True) in fake.launches and tracks[0].attempt == 1 and all(t.done for t in tracks)


def test_a_run_slow_to_start_is_left_alone():
    fake = FakePrefect({"r:0:0": ["PENDING"] * 20 + ["RUNNING", "COMPLETED"]})  # 95 s Pending, then it runs
    fake.completes = {"r:0:0": (0, 1), "r:1:0": (2,)}
    now = [0.0]
    supervise("r", SHARDS, fake, lambda c: c in fake.done_chunks, sleep=lambda s: now.__setitem__(0, now[0] + s),
              clock=lambda: now[0], alive=lambda shard, attempt: False, lost_after_s=30, poll_s=5)
    assert fake.crashed == [] and [key for key, _ in fake.launches] == ["r:0:0", "r:1:0"]
