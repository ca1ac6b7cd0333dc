"""The parent's Prefect dispatcher: shard flow runs through `run_deployment(..., timeout=0)`.

`timeout=0` returns as soon as the flow run exists; the idempotency key makes a second launch with the
same key return the first run (prefect 3.9.1 `src/prefect/deployments/flow_runs.py`, and the
`idempotency_key` branch of `src/prefect/server/models/flow_runs.py:create_flow_run`).
`as_subflow=False`: a child of a crashed parent must not be tied to that parent's run (prefect#12864).
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from chunkwise.errors import SetupError
from chunkwise.plan.shards import Shard

SHARD_DEPLOYMENT = "chunkwise-shard/shard"
QUEUE, RETRY_QUEUE = "shards", "retry"
#: Flow runs read per call: the server refuses a `limit` above PREFECT_SERVER_API_DEFAULT_LIMIT (200 by
#: default; prefect 3.9.1 `src/prefect/server/api/dependencies.py` LimitBody).
READ_PAGE = 200


class PrefectDispatcher:
    def __init__(self, run_dir: str, run_name: str, *, pool: str, deployment: str = SHARD_DEPLOYMENT) -> None:
        self.run_dir = run_dir
        self.pool = pool
        self.run_name = run_name
        self.deployment = deployment
        self._client = get_client(sync_client=True)
        try:
            found = self._client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise SetupError(f"the Prefect server at PREFECT_API_URL has no deployment {deployment}; register it with "
                             "`prefect --no-prompt deploy --prefect-file deployments/cluster.yaml --all`") from None
        if found.work_pool_name != pool:
            raise SetupError(f"deployment {deployment} runs on work pool {found.work_pool_name}, not {pool}; pass "
                             f"--pool {found.work_pool_name} or deploy it to {pool}")

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
        assert isinstance(run, FlowRun)  # timeout=0 from a sync caller: never a coroutine
        return str(run.id)

    def mark_crashed(self, run_id: str, message: str) -> None:
        """A run whose process is gone never reports its end: record it as Crashed (forced: nothing else
        will move it out of Running)."""
        self._client.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)

    def states(self, run_ids: list[str]) -> dict[str, str]:
        """Many runs' state types in one filtered read per `READ_PAGE` runs (the parent's poll); a run
        the server does not return is read on its own (which raises as `state` does)."""
        out: dict[str, str] = {}
        for start in range(0, len(run_ids), READ_PAGE):
            page = [UUID(r) for r in run_ids[start:start + READ_PAGE]]
            runs = self._client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)),
                                               limit=len(page))
            out.update({str(run.id): run.state.type.value if run.state is not None else "PENDING" for run in runs})
        return {r: out[r] if r in out else self.state(r) for r in run_ids}

    def state(self, run_id: str) -> str:
        run = self._client.read_flow_run(UUID(run_id))
        return run.state.type.value if run.state is not None else "PENDING"
