"""Resume paths through Prefect (in-process, session harness) against the simulator:

- Prefect's flow `retries` after the first attempt failed (the server went away mid-run);
- re-running a failed flow run (set back to Scheduled, then `prefect.flow_engine.run_flow`, what
  `prefect flow-run retry <id> --entrypoint ...` does: Prefect 3.9.1 `prefect/cli/flow_run.py`);
- Ollama down for part of a run and back while chunk tasks retry;
- Ollama down longer than the retries: `chunkwise run` exits 1, then `chunkwise run` with the same
  name (or `chunkwise resume RUN_DIR`) finishes the run.

Every case ends with each id once in results.parquet, results equal to an uninterrupted run, and
no request answered twice by the simulator.
"""

from __future__ import annotations

import pytest

from chunkwise.cli import main as cli_main
from chunkwise.errors import EXIT_FAILED, EXIT_OK
from chunkwise.store.files import read_json
from flows import batch as batch_module
from flows.batch import batch
from tests.support.direct_run import run_all
from tests.support.outage import Outage
from tests.support.pipeline_helpers import params_for, write_requests
from tests.support.run_checks import (
    assert_answered_once,
    assert_same_results,
    chunkwise_env,
    ledger_records,
    results,
)

pytestmark = pytest.mark.usefixtures("prefect_harness", "clean_process")

N = 40


@pytest.fixture
def source(tmp_path):
    return write_requests(tmp_path / "in.parquet", N, prompt_words=10)


def run_params(sim, source, tmp_path, name="t", mode="independent", **changes):
    values = dict(mode=mode, parallel=1, chunk_size=8, num_ctx=4096, num_predict=256, max_attempts=2, run_name=name)
    values.update(changes)
    return params_for(sim, source, tmp_path / "runs", **values)


def expected_results(sim_factory, source, tmp_path, mode="independent"):
    """An uninterrupted run of the same requests on a fresh simulator."""
    sim = sim_factory()
    run_all(run_params(sim, source, tmp_path, name=f"base-{mode}", mode=mode))
    return results(tmp_path / "runs" / f"base-{mode}")


def assert_complete_and_once(sim, run_dir, expected):
    assert_same_results(run_dir, expected)
    assert_answered_once(sim.stats(), expected=N)
    records, bad = ledger_records(run_dir)
    assert bad == 0 and len(records) == N  # each request recorded once: nothing re-sent, nothing lost


def test_prefect_flow_retry_reuses_finished_chunks_and_ledgers(sim_factory, source, tmp_path, monkeypatch):
    expected = expected_results(sim_factory, source, tmp_path, "conversation")
    sim = sim_factory()
    Outage(monkeypatch, sim, after=13)  # down in the middle of the second chunk, not back by itself
    real_raise = batch_module.raise_for_unfinished
    finished_at_failure: dict[str, int] = {}

    def server_back_then_fail(unfinished, run_dir):
        if unfinished and not finished_at_failure:
            finished_at_failure.update({p.name: p.stat().st_mtime_ns for p in (run_dir / "chunks").glob("*.parquet")})
            sim.start()  # the server is back before Prefect retries the flow run
        real_raise(unfinished, run_dir)

    monkeypatch.setattr(batch_module, "raise_for_unfinished", server_back_then_fail)
    with chunkwise_env(chunk_retries=0):
        state = batch.with_options(retries=1, retry_delay_seconds=0)(
            run_params(sim, source, tmp_path, mode="conversation"), return_state=True)
    assert state.is_completed(), state
    run_dir = tmp_path / "runs" / "t"
    assert_complete_and_once(sim, run_dir, expected)
    # conversation mode holds the one slot per chunk: exactly one chunk had finished, and the retry
    # reused its checkpoint without rewriting it
    assert len(finished_at_failure) == 1
    for name, mtime in finished_at_failure.items():
        assert (run_dir / "chunks" / name).stat().st_mtime_ns == mtime

    from prefect import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.run_count == 2  # one flow run, retried by Prefect
    assert len(read_json(run_dir / "manifest.json")["sessions"]) == 2


def test_failed_flow_run_rerun_with_run_flow_finishes_it(sim_factory, source, tmp_path, monkeypatch):
    from prefect import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    expected = expected_results(sim_factory, source, tmp_path)
    sim = sim_factory()
    outage = Outage(monkeypatch, sim, after=21)
    with chunkwise_env(chunk_retries=0):
        failed = batch(run_params(sim, source, tmp_path), return_state=True)
    assert failed.is_failed() and outage.happened.is_set()
    sim.start()
    assert sim.stats()["answered_total"] == 21
    flow_run_id = failed.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Scheduled(), force=True)
        flow_run = client.read_flow_run(flow_run_id)
    state = run_flow(batch, flow_run=flow_run, return_type="state")  # parameters come from the flow run
    assert state.is_completed(), state
    assert state.state_details.flow_run_id == flow_run_id
    assert_complete_and_once(sim, tmp_path / "runs" / "t", expected)


@pytest.mark.parametrize("mode", ["independent", "conversation"])
def test_ollama_down_for_a_while_then_back(sim_factory, source, tmp_path, monkeypatch, mode):
    """Chunk tasks fail while the server is down and Prefect retries them; the run finishes."""
    expected = expected_results(sim_factory, source, tmp_path, mode)
    sim = sim_factory()
    outage = Outage(monkeypatch, sim, after=11, back_after_s=1.0)
    stats = batch(run_params(sim, source, tmp_path, mode=mode))
    assert outage.happened.is_set()
    assert stats["requests"]["succeeded"] == N and stats["requests"]["reconciles"]
    assert stats["retries"]["chunk_task_retries_this_session"] >= 1  # Prefect retried the chunk that met the outage
    assert_complete_and_once(sim, tmp_path / "runs" / "t", expected)


@pytest.mark.parametrize("again", ["run", "resume", "resume-input-gone"])
def test_ollama_down_longer_than_retries_exits_1_then_resumes(sim_factory, source, tmp_path, monkeypatch, capsys,
                                                              again):
    expected = expected_results(sim_factory, source, tmp_path, "conversation")
    sim = sim_factory()
    Outage(monkeypatch, sim, after=17)
    argv = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(tmp_path / "runs"),
            "--run-name", "t", "--mode", "conversation", "--parallel", "1", "--chunk-size", "8",
            "--num-ctx", "4096", "--num-predict", "256", "--max-attempts", "2", "--system-prompt", "You are terse."]
    with chunkwise_env(chunk_retries=0):
        code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the error line comes after the run's log records
    assert code == EXIT_FAILED, err
    assert err.startswith("chunkwise run: run t stopped: ")
    assert "chunks did not finish" in err and "resume with the same run name" in err
    assert not (tmp_path / "runs" / "t" / "results.parquet").exists()

    sim.start()
    if again == "resume-input-gone":  # the run's staged copy is all a resume needs
        source.unlink()
    code = cli_main(argv if again == "run" else ["resume", str(tmp_path / "runs" / "t")])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    assert_complete_and_once(sim, tmp_path / "runs" / "t", expected)


def test_manifest_and_torn_prefect_result_records(sim, source, tmp_path):
    """The manifest records what the run is; Prefect's own result records (written non-atomically by
    Prefect) are only a cache: torn ones are ignored and the chunk checkpoints answer instead."""
    import hashlib

    from chunkwise import __version__

    params = run_params(sim, source, tmp_path, mode="conversation")
    batch(params)
    run_dir = tmp_path / "runs" / "t"
    manifest = read_json(run_dir / "manifest.json")
    tags = {m["name"]: m["digest"] for m in __import__("httpx").get(f"{sim.url}/api/tags").json()["models"]}
    assert manifest["input_fingerprint"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (manifest["model"], manifest["model_digest"]) == ("llama3.1:8b", tags["llama3.1:8b"])
    assert manifest["server_version"] == sim.options.ollama_version and manifest["code_version"] == __version__
    assert "ollama_version" not in manifest
    assert manifest["options"] == {"num_ctx": 4096, "num_predict": 256, "seed": 0, "temperature": 0.0}
    assert manifest["mode"] == "conversation"
    plan = manifest["chunk_plan"] | {"computed": None}
    assert plan == {"chunk_size": 8, "chunks": 5, "requests": N, "computed": None}
    assert len(manifest["sessions"]) == 1 and manifest["sessions"][0]["ended_at"]

    first = results(run_dir)
    sent = sim.stats()["answered_total"]
    batch(params)  # a chunk's cache key exists once its checkpoint does: this run writes Prefect's records
    records = sorted((run_dir / "prefect-results").iterdir())
    assert len(records) == 5
    for path in records:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    stats = batch(params)
    assert stats["requests"]["succeeded"] == N and sim.stats()["answered_total"] == sent
    assert_same_results(run_dir, first)
    assert len(read_json(run_dir / "manifest.json")["sessions"]) == 3
