"""`chunkwise status RUN_DIR` (issue 21 item 3): where a run stands from its directory alone: requests by status
and failure class, chunks checkpointed, and while a process holds the run, its rate and ETA."""

from __future__ import annotations

import json
import time

import polars as pl
import pytest

from chunkwise.cli import main
from chunkwise.results.status import render, run_status
from chunkwise.run.chunk import run_chunk
from chunkwise.run.session import RunSession
from chunkwise.store import lock as runlock
from chunkwise.store.layout import RunPaths
from tests.support.direct_run import start
from tests.support.pipeline_helpers import params_for, write_requests


@pytest.fixture
def half_run(sim_factory, tmp_path):
    """24 requests (one blank, quarantined), the 23 others in 3 chunks of 7-8; the first chunk (7) answered and
    checkpointed, one request of the second recorded as failed, the rest never sent."""
    sim = sim_factory(answer_tokens=(4, 8))
    source = write_requests(tmp_path / "in.parquet", 24)
    blank = pl.read_parquet(source).with_columns(pl.Series("prompt", [f"Question {i}" if i != 5 else "  "
                                                                      for i in range(24)]))
    blank.write_parquet(source)
    params = params_for(sim, source, tmp_path / "runs", mode="independent", num_ctx=4096, chunk_size=8, parallel=2,
                        system_prompt="", num_predict=64)
    ctx, specs = start(params)
    with RunSession(ctx) as session:
        run_chunk(session, specs[0])
    from chunkwise.store.ledger import Ledger
    from chunkwise.store.records import outcome

    second = specs[1]
    with Ledger(RunPaths(ctx.dir).ledger(second.index)) as ledger:
        ledger.append(outcome(_row=second.first_row, status="failed", error_class="transient", chunk=1,
                              error_message="gave up"))
    runlock.release(ctx.dir)  # as when the process that ran it has exited
    return ctx.dir


def test_a_stopped_run(half_run, capsys):
    status = run_status(half_run)
    assert (status.state, status.total, status.rejected) == ("stopped", 24, 1)
    assert (status.ok, status.failed, status.pending, status.failed_by_class) == (7, 1, 15, {"transient": 1})
    assert (status.chunks_done, status.chunks) == (1, 3)
    assert status.rate_per_s is None and status.eta_s is None
    assert main(["status", str(half_run)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[:3] == [
        f"run {half_run}: stopped",
        "requests: 24: 7 ok, 1 failed (transient 1), 1 rejected, 15 to send",
        "chunks: 1 of 3 checkpointed",
    ]
    assert f"resume: run the same command again, or `chunkwise resume {half_run}`" in text
    assert main(["status", str(half_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == 15


def test_a_running_run_has_a_rate_and_an_eta(half_run):
    runlock.acquire(half_run)  # a process working on the run holds its lock
    try:
        status = run_status(half_run, now=time.time() + 100.0)
    finally:
        runlock.release(half_run)
    assert status.state == "running" and status.owner.startswith("pid ")
    assert status.answered_this_session == 8  # every record is of the session the fixture started
    assert status.rate_per_s == pytest.approx(8 / 100.0, rel=0.1)
    assert status.eta_s == pytest.approx(15 / status.rate_per_s)
    assert "ETA" in render(status)
