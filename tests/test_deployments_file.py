"""deployments/prefect.yaml as `chunkwise serve` reads it, without a Prefect server (fast)."""

from __future__ import annotations

import re

import pytest

from chunkwise.cli import main
from chunkwise.commands import serve
from chunkwise.commands.serve import DeploymentFileError, load_definitions, runner_deployments
from tests.support.ui_helpers import PREFECT_FILE


def test_the_file_defines_an_on_demand_and_a_paused_nightly_deployment():
    by_name = {d["name"]: d for d in load_definitions(PREFECT_FILE)}
    assert set(by_name) == {"on-demand", "nightly"}
    for d in by_name.values():
        assert d["entrypoint"] == "flows/batch.py:batch"
        assert d["work_pool"]["name"] == "chunkwise-process"
        assert d["enforce_parameter_schema"] is True
    assert by_name["nightly"]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": False}]
    assert "schedules" not in by_name["on-demand"]


def test_serve_builds_the_same_deployments_bound_to_no_pool():
    deployments = {d.name: d for d in runner_deployments(load_definitions(PREFECT_FILE))}
    nightly = deployments["nightly"]
    assert nightly.flow_name == "chunkwise-batch"
    assert nightly.entrypoint == "flows.batch.batch"  # imported from the installed package, whatever the cwd
    assert nightly.work_pool_name is None
    assert nightly.parameters == {"params": {"input_path": "data/nightly.parquet"}}
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 2 * * *", "UTC", False)
    schema = deployments["on-demand"]._parameter_openapi_schema.model_dump()
    run_params = schema["definitions"]["RunParams"]
    assert run_params["required"] == ["input_path"]
    assert run_params["properties"]["num_ctx"]["minimum"] == 256
    assert deployments["on-demand"].enforce_parameter_schema is True


@pytest.mark.parametrize("text, only, message", [
    (None, None, "does not exist; give --prefect-file"),
    ("name: x\n", None, "has no `deployments:` list"),
    ("deployments:\n  - name: a\n", None, "deployments[0] needs a `name` and an `entrypoint`"),
    ("deployments:\n  - {name: a, entrypoint: 'flows/batch.py:batch', triggers: []}\n", None,
     "deployment 'a' has keys chunkwise serve does not support: triggers"),
    ("deployments:\n  - {name: a, entrypoint: 'flows/batch.py:batch'}\n", ["b"], "has no deployment named b; it has a"),
    ("deployments: [\n", None, "cannot be read as YAML"),
])
def test_bad_deployment_files_are_named_with_the_fix(tmp_path, text, only, message):
    path = tmp_path / "prefect.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(DeploymentFileError, match=r"prefect\.yaml.*" + re.escape(message)):
        load_definitions(path, only)


def test_entrypoints_outside_the_package_are_refused():
    for bad in ("/abs/path.py:batch", "flows/batch.py", "../x.py:f", "flows/batch.py:nope"):
        with pytest.raises(DeploymentFileError, match="entrypoint"):
            serve.flow_for(bad)


def test_serve_without_a_server_exits_2_with_the_fix(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    argv = ["serve", "--prefect-file", str(PREFECT_FILE), "--limit", "1"]
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(argv) == 2
    assert capsys.readouterr().err.startswith(
        "chunkwise serve: PREFECT_API_URL is not set: start a Prefect server (`make server`)")
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("chunkwise serve: ") and "http://127.0.0.1:9/api does not answer" in err
