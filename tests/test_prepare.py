"""Preparing a run: staging happens once per run directory, not once per preflight and flow."""

from chunkwise.run.prepare import plan_run, prepare_run
from tests.support.pipeline_helpers import params_for, write_requests


def test_preflight_then_flow_stage_once_and_resume_reuses_the_staged_copy(sim, tmp_path):
    source = write_requests(tmp_path / "in.parquet", 30)
    params = params_for(sim, source, tmp_path / "runs")
    first = prepare_run(params)
    plan_run(first, write=False)  # the CLI's preflight
    staged = tmp_path / "runs" / "t" / "requests.parquet"
    stamp = staged.stat().st_mtime_ns, staged.stat().st_ino
    again = prepare_run(params)  # the flow
    plan_run(again)
    assert (staged.stat().st_mtime_ns, staged.stat().st_ino) == stamp
    assert again.staged.accepted_rows.to_pylist() == first.staged.accepted_rows.to_pylist()

    source.unlink()  # a resume needs only the run's own copy
    resumed = prepare_run(params)
    assert (staged.stat().st_mtime_ns, staged.stat().st_ino) == stamp
    assert resumed.staged.accepted == 30 and resumed.ctx.input_fingerprint == first.ctx.input_fingerprint
