"""Conversation chunk sizes from the server's count of the rows (chunkwise.run.density, issue 19 item 7)."""

from __future__ import annotations

import polars as pl

from chunkwise.run.prepare import plan_run, prepare_run
from chunkwise.store.files import read_json
from tests.support.pipeline_helpers import params_for, write_requests


def dense_rows(path, n: int):
    """Order numbers: digits are one token each on the simulator (as on Gemma), ~1 character per token."""
    prompts = [f"Check {i:06d} " + " ".join(f"{(i * 7919 + j * 104729) % 999983:06d}" for j in range(40))
               for i in range(n)]
    pl.DataFrame({"id": [f"r{i}" for i in range(n)], "prompt": prompts}).write_parquet(path, row_group_size=64)
    return path, prompts


def chats(sim) -> int:
    return sum(sim.stats(fingerprints=False)["requests"].get("/api/chat", {}).values())


def test_dense_conversation_chunks_fit_num_ctx_at_the_servers_count(sim, tmp_path):
    """At 4 characters per token the digits look four times shorter than they are: a conversation of the old
    chunk size held about twice num_ctx and had to trim turn after turn. Sized from the server's count, a chunk's
    prompts and expected answers fit 0.8 x num_ctx, as the rule intends."""
    from chunkwise.harness.sim.tokenizer import count_tokens  # the witness's own count, for the check only

    source, prompts = dense_rows(tmp_path / "in.parquet", 400)
    params = params_for(sim, source, tmp_path / "runs", chunk_size=None)
    specs, manifest = plan_run(prepare_run(params))
    size = manifest["chunk_plan"]["chunk_size"]
    true_tokens = sum(count_tokens(p) for p in prompts) / len(prompts)
    assert size * (true_tokens + params.expected_answer_tokens) <= 0.8 * params.num_ctx * 1.05
    sizing = manifest["chunk_plan"]["sizing"]
    assert sizing["source"] == "server count" and sizing["chars_per_token"] < 1.5
    assert len(specs) == manifest["chunk_plan"]["chunks"] and len(specs) % params.parallel == 0


def test_preflight_and_flow_count_once_and_a_resume_keeps_the_recorded_plan(sim, tmp_path):
    source, _ = dense_rows(tmp_path / "in.parquet", 200)
    params = params_for(sim, source, tmp_path / "runs", chunk_size=None)
    plan_run(prepare_run(params), write=False)  # the CLI's preflight
    assert chats(sim) == 1
    specs, manifest = plan_run(prepare_run(params))  # the flow
    assert chats(sim) == 1
    assert read_json(tmp_path / "runs" / "t" / "token_sample.json")["sizing"] == manifest["chunk_plan"]["sizing"]

    (tmp_path / "runs" / "t" / "token_sample.json").unlink()
    again, resumed = plan_run(prepare_run(params))  # a resume: the manifest's plan, nothing sent
    assert chats(sim) == 1
    assert resumed["chunk_plan"] == manifest["chunk_plan"] and again == specs


def test_no_count_where_it_cannot_change_the_plan_or_the_user_gave_the_ratio(sim, tmp_path):
    few = write_requests(tmp_path / "few.parquet", 6)  # one conversation per slot at any plausible ratio
    plan_run(prepare_run(params_for(sim, few, tmp_path / "runs", chunk_size=None, run_name="few")))
    many, _ = dense_rows(tmp_path / "many.parquet", 200)
    _, given = plan_run(prepare_run(params_for(sim, many, tmp_path / "runs", chunk_size=None, run_name="given",
                                               chars_per_token=4.0)))
    _, independent = plan_run(prepare_run(params_for(sim, many, tmp_path / "runs", chunk_size=None,
                                                     run_name="ind", mode="independent")))
    assert chats(sim) == 0
    assert "sizing" not in given["chunk_plan"] and "sizing" not in independent["chunk_plan"]


def test_a_server_that_cannot_count_leaves_the_configured_ratio(sim_factory, tmp_path):
    """Every chat refused with a 500: the chunks are cut as before, and the run is not stopped by the count."""
    sim = sim_factory(fail_rate=1.0)
    source, _ = dense_rows(tmp_path / "in.parquet", 200)
    params = params_for(sim, source, tmp_path / "runs", chunk_size=None)
    _, manifest = plan_run(prepare_run(params))
    _, old_rule = plan_run(prepare_run(params_for(sim, source, tmp_path / "runs", chunk_size=None, run_name="old",
                                                  chars_per_token=4.0)))
    assert "sizing" not in manifest["chunk_plan"]
    assert manifest["chunk_plan"]["chunk_size"] == old_rule["chunk_plan"]["chunk_size"]
