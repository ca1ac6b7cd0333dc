"""Loading: name the run after its flow run, check the configuration and the server, stage the
Parquet input into the run directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from chunkwise.params import RunParams
from chunkwise.run.prepare import PreparedRun, prepare_run
from chunkwise.store.layout import default_run_name

if TYPE_CHECKING:
    from chunkwise.run.headstart import HeadStart


def name_run_for_flow_run(params: RunParams) -> RunParams:
    """An empty run_name becomes `<input stem>-<flow run creation time>-<flow run id[:8]>`: Prefect's
    Retry re-executes the same flow run with the same parameters, so it must find the same run
    directory (and resume from its checkpoints) instead of a new time-stamped one."""
    run = ctx.flow_run if (ctx := FlowRunContext.get()) is not None else None
    if params.run_name or run is None or run.created is None:
        return params
    name = f"{default_run_name(params.input_path, run.created)}-{run.id.hex[:8]}"
    # The name is this flow run's own: a Retry must resume it, not start yet another fresh run.
    return params.model_copy(update={"run_name": name, "new_run": False})


@task(name="load-requests", cache_policy=NO_CACHE, persist_result=False)
def load_requests(params: RunParams, head: HeadStart | None = None) -> PreparedRun:
    """Name the run, validate and stage the requests (Polars, streaming); quarantine bad rows with a reason.
    With the CLI's head start (`chunkwise.run.headstart`), what its preflight prepared, checked and staged."""
    return head.prepared if head is not None else prepare_run(name_run_for_flow_run(params))
