"""The Python API (issue 21 item 7): `chunkwise.plan(...)` and `chunkwise.run(...)` with the same parameters as
the commands (`RunParams`, or its fields as keywords) and typed results; a second call resumes."""

from __future__ import annotations

import signal

import polars as pl
import pytest
from pydantic import ValidationError

import chunkwise
from chunkwise.api import RunResult
from chunkwise.errors import EXIT_CONFIG, EXIT_OK, SetupError
from chunkwise.params import RunParams
from chunkwise.plan.figures import Plan
from tests.support.pipeline_helpers import write_requests
from tests.support.run_checks import assert_answered_once


def test_plan_takes_fields_or_run_params(sim, tmp_path):
    source = write_requests(tmp_path / "in.parquet", 10)
    plan = chunkwise.plan(input_path=str(source), host=sim.url, chunk_size=4)
    assert isinstance(plan, Plan) and (plan.accepted, plan.chunk_count, plan.mode) == (10, 3, "independent")
    same = chunkwise.plan(RunParams(input_path=str(source), host=sim.url, chunk_size=4))
    assert same.as_dict() == plan.as_dict()
    with pytest.raises(ValidationError, match="num_ctx"):
        chunkwise.plan(input_path=str(source), num_ctx=1)
    with pytest.raises(SetupError, match="no such file") as info:
        chunkwise.plan(input_path=str(tmp_path / "none.parquet"), host=sim.url)
    assert info.value.exit_code == EXIT_CONFIG


@pytest.mark.usefixtures("prefect_harness")
def test_run_returns_a_typed_result_and_a_second_call_resumes(sim_factory, tmp_path):
    sim = sim_factory(answer_tokens=(4, 8))
    source = write_requests(tmp_path / "in.parquet", 10)
    before = signal.getsignal(signal.SIGINT)
    lines: list[str] = []
    result = chunkwise.run(input_path=str(source), host=sim.url, output_dir=str(tmp_path / "runs"), chunk_size=4,
                           say=lines.append)
    assert isinstance(result, RunResult) and result.ok and result.exit_code == EXIT_OK
    assert result.run_dir.parent == tmp_path / "runs" and result.run_dir.name.startswith("in-")
    assert result.stats is not None and result.stats["requests"]["succeeded"] == 10
    answers = pl.read_parquet(result.results)
    assert answers["status"].to_list() == ["ok"] * 10 and answers["response"].null_count() == 0
    assert signal.getsignal(signal.SIGINT) is before  # the run's stop handlers are gone again
    again = chunkwise.run(RunParams(input_path=str(source), host=sim.url, output_dir=str(tmp_path / "runs"),
                                    chunk_size=4), say=lines.append)
    assert again.run_dir == result.run_dir and again.ok
    assert any("resuming: 10 of 10 requests already answered" in line for line in lines)
    assert_answered_once(sim.stats(), 10)
