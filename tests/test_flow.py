"""The batch flow end to end under one session-wide Prefect harness, against the simulator."""

from __future__ import annotations

import polars as pl
import pytest

from chunkwise.store.files import read_json
from flows.batch import batch
from tests.support.pipeline_helpers import params_for, write_requests

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.parametrize("mode", ["independent", "conversation"])
def test_every_request_answered_once_in_input_order(sim, tmp_path, mode):
    source = write_requests(tmp_path / "in.parquet", 45)
    params = params_for(sim, source, tmp_path / "runs", mode=mode)
    stats = batch(params)

    results = pl.read_parquet(tmp_path / "runs" / "t" / "results.parquet")
    assert results["id"].to_list() == [f"r{i:04d}" for i in range(45)]
    assert results["group"].to_list() == [i % 3 for i in range(45)]  # carried through
    assert set(results["status"]) == {"ok"}
    assert results["response"].str.len_chars().min() > 0
    # chunk_size 10 -> 45 rows in 5 balanced chunks; conversation mode ends with a taper of 2 chunks of 5,
    # 2 of 2 and 2 of 1 (16 rows) and cuts the 29 before it into a multiple of parallel (2): 4 + 6
    assert results["chunk"].n_unique() == (10 if mode == "conversation" else 5)

    sim_stats = sim.stats()
    assert sim_stats["answered_total"] == 45
    assert sim_stats["max_answered_per_fingerprint"] == 1
    assert stats["requests"] | {"failed_by_class": None} == {
        "total": 45, "succeeded": 45, "failed": 0, "rejected": 0, "failed_by_class": None, "reconciles": True}
    assert stats["tokens"]["prompt_evaluated"] == results["prompt_eval_count"].sum()
    assert stats["tokens"]["generated"] == results["eval_count"].sum()
    on_disk = read_json(tmp_path / "runs" / "t" / "stats.json")
    assert on_disk["requests"] == stats["requests"]
    if mode == "conversation":
        # a conversation re-sends its history: later turns evaluate more prompt tokens than the first
        counts = results.filter(pl.col("chunk") == 0)["prompt_eval_count"].to_list()
        assert counts[-1] > counts[0]


def test_rerun_of_a_finished_run_sends_nothing(sim, tmp_path):
    source = write_requests(tmp_path / "in.parquet", 20)
    params = params_for(sim, source, tmp_path / "runs")
    batch(params)
    before = sim.stats()["requests"]["/api/chat"]
    first = pl.read_parquet(tmp_path / "runs" / "t" / "results.parquet")
    stats = batch(params)
    assert sim.stats()["requests"]["/api/chat"] == before
    again = pl.read_parquet(tmp_path / "runs" / "t" / "results.parquet")
    assert again.select("id", "response").equals(first.select("id", "response"))
    assert stats["requests"]["succeeded"] == 20
    assert len(read_json(tmp_path / "runs" / "t" / "manifest.json")["sessions"]) == 2


def test_rerun_of_a_finished_run_reports_the_same_token_calibration(sim, tmp_path):
    """The calibration in stats.json comes from the run's answers, so a re-run that answers nothing
    (every chunk is served from its checkpoint) reports the calibration of the run, not the default."""
    source = write_requests(tmp_path / "in.parquet", 30)
    params = params_for(sim, source, tmp_path / "runs")
    first = batch(params)["truncation"]["calibration"]
    assert first["calibrated"] and first["samples"] >= 20
    again = batch(params)["truncation"]["calibration"]
    assert again == first
    assert read_json(tmp_path / "runs" / "t" / "stats.json")["truncation"]["calibration"] == first


def in_flight(wrap_chat, monkeypatch) -> dict[str, int]:
    """Count the chat requests in flight at once (`now`, and the `peak`) through the factory seam, each held
    long enough for every conversation to be in flight together."""
    import threading
    import time

    lock = threading.Lock()
    seen = {"now": 0, "peak": 0}

    def chat(client, request):
        with lock:
            seen["now"] += 1
            seen["peak"] = max(seen["peak"], seen["now"])
        try:
            time.sleep(0.3)
            return client.chat(request)
        finally:
            with lock:
                seen["now"] -= 1

    wrap_chat(monkeypatch, chat)
    return seen


def test_flow_uses_every_slot_in_conversation_mode_beyond_the_default_pool(sim, tmp_path, monkeypatch):
    """A deployment calls the flow directly (not through the CLI): the flow itself sizes its chunk
    pool so that `parallel` conversations (one per chunk) are in flight at once, beyond the 8
    workers of the default pool."""
    from tests.support.backends import wrap_chat

    seen = in_flight(wrap_chat, monkeypatch)
    source = write_requests(tmp_path / "in.parquet", 24)
    params = params_for(sim, source, tmp_path / "runs", mode="conversation", parallel=12, chunk_size=2)
    stats = batch(params)
    assert stats["requests"]["succeeded"] == 24
    assert seen["peak"] == 12


def test_a_conversation_shard_keeps_every_slot_of_its_host_busy(sim, tmp_path, monkeypatch):
    """A shard runs with its host's slots (`chunkwise worker --parallel 16` sets CHUNKWISE_PARALLEL): its chunk
    pool is sized per run as the batch flow's is, so 16 conversations are in flight at once, beyond the 8
    workers of the settings' default pool (the pool was once sized at import from the settings: 8 of 16)."""
    from chunkwise.cluster.shard import write_context
    from chunkwise.plan.shards import load_or_write
    from chunkwise.store import lock
    from flows.shard import shard
    from tests.support.backends import wrap_chat
    from tests.support.direct_run import start
    from tests.support.run_checks import chunkwise_env

    source = write_requests(tmp_path / "in.parquet", 64)
    ctx, specs = start(params_for(sim, source, tmp_path / "runs", mode="conversation", parallel=2, chunk_size=2))
    lock.release(ctx.dir)  # the parent's lock; a shard holds only chunk locks
    write_context(ctx)
    load_or_write(ctx.dir, specs, 10_000)  # one shard of every chunk
    seen = in_flight(wrap_chat, monkeypatch)
    with chunkwise_env(ollama_host=sim.url, parallel=16, host_label="gpu1"):
        result = shard(str(ctx.dir), 0)
    # 62 rows in 32 chunks of 1-2 (a multiple of parallel), then the taper's 2 chunks of 1
    assert len(result["chunks"]) == len(specs) == 34 and not any(c["skipped"] for c in result["chunks"])
    assert seen["peak"] == 16


def test_rejected_rows_are_quarantined_and_reconciled(sim, tmp_path):
    source = tmp_path / "in.parquet"
    pl.DataFrame({"id": [1, 2, 3, 4], "prompt": ["hello", None, "  ", "world"]}).write_parquet(source)
    stats = batch(params_for(sim, source, tmp_path / "runs"))
    results = pl.read_parquet(tmp_path / "runs" / "t" / "results.parquet")
    assert results["id"].to_list() == [1, 2, 3, 4]
    assert results["status"].to_list() == ["ok", "rejected", "rejected", "ok"]
    assert "prompt is null" in results["error_message"][1]
    assert stats["requests"]["rejected"] == 2 and stats["requests"]["reconciles"]
    assert sim.stats()["answered_total"] == 2


def test_ui_form_lists_every_parameter_in_declaration_order():
    from prefect.utilities.callables import parameter_schema

    from chunkwise.params import RunParams

    properties = parameter_schema(batch.fn).model_dump()["definitions"]["RunParams"]["properties"]
    assert [name for name, _ in sorted(properties.items(), key=lambda kv: kv[1]["position"])] == list(
        RunParams.model_fields)
