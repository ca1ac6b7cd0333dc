"""The parent's Prefect dispatcher: shard flow runs through `run_deployment(..., timeout=0)`.

`timeout=0` returns as soon as the flow run exists; the idempotency key makes a second launch with the
same key return the first run (prefect 3.9.1 `src/prefect/deployments/flow_runs.py`, and the
`idempotency_key` branch of `src/prefect/server/models/flow_runs.py:create_flow_run`).
`as_subflow=False`: a child of a crashed parent must not be tied to that parent's run (prefect#12864).
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from chunkwise.plan.shards import Shard

SHARD_DEPLOYMENT = "chunkwise-shard/shard"
QUEUE, RETRY_QUEUE = "shards", "retry"


class PrefectDispatcher:
    def __init__(self, run_dir: str, run_name: str, *, pool: str, deployment: str = SHARD_DEPLOYMENT) -> None:
        self.run_dir = run_dir
        self.pool = pool
        self.run_name = run_name
        self.deployment = deployment
        self._client = get_client(sync_client=True)

    def launch(self, shard: Shard, attempt: int, key: str, *, retry: bool) -> str:
        run = run_deployment(
            self.deployment,
            parameters={"run_dir": self.run_dir, "shard": shard.index, "attempt": attempt},
            timeout=0,
            idempotency_key=key,
            flow_run_name=f"{self.run_name}-shard-{shard.index:04d}-a{attempt}",
            work_queue_name=RETRY_QUEUE if retry else QUEUE,
            as_subflow=False,
        )
        return str(run.id)

    def state(self, run_id: str) -> str:
        run = self._client.read_flow_run(run_id)
        return run.state.type.value if run.state is not None else "PENDING"
