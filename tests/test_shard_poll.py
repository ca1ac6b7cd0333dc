"""Polls between shards: the parent reads its shard runs' states in one call per poll, not one per
unfinished shard (a 170,000-request run has ~189 shards of 900), against a fake dispatcher and against
Prefect's API; a worker polls for the next shard every 2 s, not Prefect's default 10 s."""

from __future__ import annotations

import pytest

from chunkwise.cluster.parent import supervise
from chunkwise.plan.shards import Shard


class BatchFake:
    """Each run goes RUNNING, then COMPLETED (its shard's chunks checkpointed) on its second read."""

    def __init__(self) -> None:
        self.reads: list[int] = []  # runs read per call
        self.seen: dict[str, int] = {}
        self.done: set[int] = set()

    def launch(self, shard: Shard, attempt: int, key: str, *, retry: bool) -> str:
        return f"{shard.index}"

    def mark_crashed(self, run_id: str, message: str) -> None:
        raise AssertionError("nothing crashes here")

    def state(self, run_id: str) -> str:
        raise AssertionError("the parent read one run at a time although the dispatcher reads many at once")

    def states(self, run_ids: list[str]) -> dict[str, str]:
        self.reads.append(len(run_ids))
        out = {}
        for run_id in run_ids:
            n = self.seen[run_id] = self.seen.get(run_id, 0) + 1
            if n >= 2:
                self.done.add(int(run_id))
            out[run_id] = "COMPLETED" if n >= 2 else "RUNNING"
        return out


def test_the_parent_reads_every_unfinished_shard_in_one_call_per_poll():
    shards = [Shard(index=i, chunks=(i,), requests=10) for i in range(50)]
    fake = BatchFake()
    tracks = supervise("r", shards, fake, lambda c: c in fake.done, sleep=lambda s: None)
    assert all(t.done for t in tracks)
    assert fake.reads == [50, 50]  # two polls, each one call for all 50 shards


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_dispatcher_reads_many_runs_in_pages(monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Scheduled

    import tasks.dispatch as dispatch

    @flow(name="poll-target")
    def target() -> None:
        return None

    monkeypatch.setattr(dispatch, "READ_PAGE", 2)  # 5 runs: pages of 2, 2 and 1
    client = get_client(sync_client=True)
    ids = [str(client.create_flow_run(target, state=Scheduled()).id) for _ in range(5)]
    client.set_flow_run_state(ids[3], Completed(), force=True)
    dispatcher = dispatch.PrefectDispatcher.__new__(dispatch.PrefectDispatcher)  # no deployment needed to read
    dispatcher._client = client
    states = dispatcher.states(ids)
    assert states == {run_id: "COMPLETED" if k == 3 else "SCHEDULED" for k, run_id in enumerate(ids)}
    assert states == {run_id: dispatcher.state(run_id) for run_id in ids}


def test_a_worker_polls_for_shards_every_second_unless_told_otherwise():
    from chunkwise.cluster.worker import WorkerConfig, worker_env

    cfg = WorkerConfig(pool="p", name="gpu1", ollama_host="http://127.0.0.1:11434")
    assert worker_env(cfg, base={})["PREFECT_WORKER_QUERY_SECONDS"] == "1"
    assert worker_env(cfg, base={"PREFECT_WORKER_QUERY_SECONDS": "5"})["PREFECT_WORKER_QUERY_SECONDS"] == "5"


def test_a_worker_starts_shard_flows_with_its_own_interpreter_in_one_process():
    """The shard deployment names `python -m prefect.engine` (one process per shard instead of Prefect's
    workspace supervisor that then execs the engine), and the worker puts its interpreter first on PATH
    so that `python` is the one chunkwise is installed in."""
    import os
    import sys
    from pathlib import Path

    import yaml

    from chunkwise.cluster.worker import WorkerConfig, worker_env

    cfg = WorkerConfig(pool="p", name="gpu1", ollama_host="http://127.0.0.1:11434")
    path = worker_env(cfg, base={"PATH": "/usr/bin:/bin"})["PATH"].split(os.pathsep)
    assert path[0] == os.path.dirname(sys.executable) and path[1:] == ["/usr/bin", "/bin"]
    (deployment,) = yaml.safe_load((Path(__file__).parents[1] / "deployments/cluster.yaml").read_text())["deployments"]
    assert deployment["work_pool"]["job_variables"]["command"] == "python -m prefect.engine"
