"""deployments/prefect.yaml end to end with real components: a Prefect server on loopback (temporary
home), `prefect deploy` onto a process work pool and a worker, `chunkwise serve` as a subprocess,
and the Ollama simulator. Runs are triggered through the API (run_deployment)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import polars as pl
import pytest

from chunkwise.commands.serve import load_definitions
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.plan.chunks import plan_chunks
from tests.support.pipeline_helpers import write_requests
from tests.support.ui_helpers import (
    FLOW,
    PREFECT_FILE,
    REPO,
    child_env,
    chunkwise_serve,
    prefect_server,
    read_deployment,
    wait_for,
)

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).parent / "prefect")
NAMES = ("on-demand", "nightly")
#: Deployment fields that must not depend on how the deployment was registered.
SAME_FIELDS = ("description", "tags", "parameters", "parameter_openapi_schema", "enforce_parameter_schema",
               "concurrency_limit", "paused")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A Prefect server, an in-process simulator and this process's client pointed at the server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("deployments")
    with prefect_server(tmp / "server-home", log=tmp / "server.log") as api_url, \
            running_simulator(SimOptions(parallel=2)) as sim, \
            temporary_settings({PREFECT_API_URL: api_url}):
        yield {"api": api_url, "tmp": tmp, "sim": sim}


@pytest.fixture(scope="module")
def served(stack):
    tmp = stack["tmp"]
    (tmp / "serve-cwd").mkdir(exist_ok=True)
    with chunkwise_serve(stack["api"], tmp / "serve-cwd", log=tmp / "serve.log", home=tmp / "serve-home") as proc:
        yield proc


def run_params(stack, source: Path, out: Path, **changes) -> dict:
    # conversation mode, as these tests were written for (the default is now independent): its chunks are a
    # multiple of `parallel`, which the task-run names below are checked against
    params = dict(input_path=str(source), host=stack["sim"].url, output_dir=str(out), num_ctx=8192,
                  chunk_size=10, parallel=2, system_prompt="You are terse.", mode="conversation")
    return {"params": {**params, **changes}}


def schedules_of(deployment: dict) -> list[tuple]:
    return [(s["schedule"], s["active"], s["parameters"]) for s in deployment["schedules"]]


def test_prefect_yaml_is_what_serve_registers(stack, request, tmp_path):
    """`prefect deploy` (process pool, worker) and `chunkwise serve` register identical deployments."""
    from prefect.deployments import run_deployment

    env = child_env(tmp_path / "cli-home", stack["api"])
    subprocess.run([PREFECT, "work-pool", "create", "chunkwise-process", "--type", "process", "--overwrite"],
                   env=env, check=True, capture_output=True, timeout=120)
    deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    deployed = {name: read_deployment(stack["api"], name) for name in NAMES}
    assert set(deployed) == {d["name"] for d in load_definitions(PREFECT_FILE)}
    for d in deployed.values():
        assert d["work_pool_name"] == "chunkwise-process"
        assert d["entrypoint"] == "flows/batch.py:batch"
        # no pull step in the file: prefect deploy records the directory it ran in (the project root)
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]

    # The process work pool really runs it: one worker pass picks the run up and waits for it.
    source = write_requests(tmp_path / "in.parquet", 12)
    flow_run = run_deployment(f"{FLOW}/on-demand", parameters=run_params(stack, source, tmp_path / "runs"), timeout=0)
    worker = subprocess.run([PREFECT, "worker", "start", "--pool", "chunkwise-process", "--run-once", "--limit", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), f"{state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    assert len(pl.read_parquet(next((tmp_path / "runs").glob("*/results.parquet")))) == 12

    # chunkwise serve refuses names bound to a work pool (a worker would poll them too) ...
    refused = subprocess.run([sys.executable, "-m", "chunkwise", "serve"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "chunkwise-batch/on-demand (pool chunkwise-process), chunkwise-batch/nightly (pool chunkwise-process) " \
           "already registered on a work pool" in refused.stderr
    assert refused.stderr.startswith("chunkwise serve: ")
    with get_client(sync_client=True) as client:
        for d in deployed.values():
            client.delete_deployment(d["id"])
    request.getfixturevalue("served")  # ... and once they are gone registers the same ones from the same file
    for name in NAMES:
        served = read_deployment(stack["api"], name)
        assert served["work_pool_name"] is None and served["entrypoint"] == "flows.batch.batch"
        for field in SAME_FIELDS:
            assert served[field] == deployed[name][field], (name, field)
        assert schedules_of(served) == schedules_of(deployed[name])
    nightly = deployed["nightly"]
    assert schedules_of(nightly) == [({"cron": "0 2 * * *", "timezone": "UTC", "day_or": True}, False, {})]
    assert nightly["parameter_openapi_schema"]["definitions"]["RunParams"]["properties"]["num_ctx"]["minimum"] == 256


def test_on_demand_run_through_the_api(stack, served, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.client.schemas.sorting import LogSort
    from prefect.deployments import run_deployment

    sim = stack["sim"]
    sim.reset()
    source = write_requests(tmp_path / "in.parquet", 30)
    flow_run = run_deployment(f"{FLOW}/on-demand", parameters=run_params(stack, source, tmp_path / "runs"),
                              timeout=180, poll_interval=1)
    assert flow_run.state.is_completed(), flow_run.state

    (run_dir,) = (tmp_path / "runs").iterdir()  # an empty run_name: one directory named after this flow run
    assert run_dir.name.endswith(flow_run.id.hex[:8])
    results = pl.read_parquet(run_dir / "results.parquet")
    assert results["id"].to_list() == [f"r{i:04d}" for i in range(30)]
    assert set(results["status"]) == {"ok"}
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["requests"]["succeeded"] == 30 and stats["requests"]["reconciles"]
    assert sim.stats()["answered_total"] == 30

    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))}
        assert artifacts["chunkwise-progress"].type == "progress"
        assert float(artifacts["chunkwise-progress"].data) == 100.0
        table = artifacts["chunkwise-stats"]
        assert table.type == "table"
        rows = {row["metric"]: row["value"] for row in json.loads(table.data)}
        assert rows["requests total / succeeded / failed / rejected"] == "30 / 30 / 0 / 0"

        only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        # the planner's chunks (conversation mode: a multiple of `parallel`), each a task run named by its
        # input rows; task runs reach the server as events, recorded asynchronously: wait for all of them
        # (and load-requests, plan-chunks, aggregate)
        specs = plan_chunks(30, 10, multiple_of=2)
        names = wait_for(lambda: [t.name for t in client.read_task_runs(flow_run_filter=only_this_run)][len(specs) + 2:]
                         and sorted(t.name for t in client.read_task_runs(flow_run_filter=only_this_run)),
                         60, "every task run recorded")
        assert [n for n in names if n.startswith("chunk-")] == [s.label for s in specs]
        assert re.fullmatch(r"chunk-0000 \[0-\d\]", specs[0].label)
        last = specs[-1]
        finished = f"{last.label} finished: {last.stop - last.start} ok, 0 failed, sent {last.stop - last.start} ["

        def messages() -> list[str] | None:  # logs reach the API in batches (every 2 s): wait for the last chunk's
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])),
                                    sort=LogSort.TIMESTAMP_ASC)
            lines = [log.message for log in logs]
            return lines if any(m.startswith(finished) and f"/{len(specs)} chunks" in m for m in lines) else None

        lines = wait_for(messages, 60, f"the log line {finished!r}")
    prompts = pl.read_parquet(source)["prompt"].to_list()
    assert not [m for m in lines for p in prompts if p[:30] in m], "a log line shows prompt text"


def test_invalid_parameters_are_refused_before_a_run_exists(stack, served, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError

    only_on_demand = DeploymentFilter(name=DeploymentFilterName(any_=["on-demand"]))
    with get_client(sync_client=True) as client:
        before = client.count_flow_runs(deployment_filter=only_on_demand)
    bad = [({"num_ctx": 100}, "'params.num_ctx'. Failure reason: 100 is less than the minimum of 256"),
           ({"mode": "batch"}, "'params.mode'. Failure reason: 'batch' is not one of"),
           ({"input_path": None}, "'params.input_path'")]
    for change, reason in bad:
        params = run_params(stack, tmp_path / "in.parquet", tmp_path / "runs", **change)
        with pytest.raises(PrefectHTTPStatusError, match=re.escape(reason)):
            run_deployment(f"{FLOW}/on-demand", parameters=params, timeout=0)
    with get_client(sync_client=True) as client:
        assert client.count_flow_runs(deployment_filter=only_on_demand) == before


def test_scheduled_deployment_lists_its_next_runs(stack, served):
    """The nightly schedule ships paused; switched on (as in the UI), its next runs are in the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name(f"{FLOW}/nightly")
        (schedule,) = nightly.schedules
        assert schedule.active is False and schedule.schedule.cron == "0 2 * * *"
        this = DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id]))
        scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
        assert client.read_flow_runs(deployment_filter=this, flow_run_filter=scheduled) == []

        client.update_deployment_schedule(nightly.id, schedule.id, active=True)
        try:
            runs = wait_for(lambda: client.read_flow_runs(deployment_filter=this, flow_run_filter=scheduled), 60,
                            "the scheduler to create the nightly runs")
        finally:
            client.update_deployment_schedule(nightly.id, schedule.id, active=False)
    starts = sorted(r.expected_start_time for r in runs)
    assert len(starts) >= 2
    assert all(s.hour == 2 and s.minute == 0 and s.utcoffset() == timedelta(0) for s in starts)
    assert datetime.now(UTC) < starts[0] <= datetime.now(UTC) + timedelta(days=1)
    assert all(b - a == timedelta(days=1) for a, b in pairwise(starts))
    assert all(r.parameters == {"params": {"input_path": "data/nightly.parquet"}} for r in runs)
