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


def test_a_run_whose_manifest_says_ollama_version_resumes_and_is_rewritten_with_server_version(sim, tmp_path):
    """Manifests written before the server's version had one name for every server kind recorded it as
    `ollama_version`: such a run resumes without a word, and its manifest is written back under today's name."""
    from chunkwise.store.files import read_json, write_json_atomic
    from tests.support.direct_run import run_all

    params = params_for(sim, write_requests(tmp_path / "in.parquet", 12), tmp_path / "runs")
    ctx, _, _ = run_all(params)
    path = ctx.dir / "manifest.json"
    old = read_json(path)
    old["ollama_version"] = old.pop("server_version")
    write_json_atomic(path, old)
    before = sim.stats()["requests"]["/api/chat"]

    _, summaries, stats = run_all(params)
    manifest = read_json(path)
    assert manifest["server_version"] == sim.options.ollama_version and "ollama_version" not in manifest
    assert len(manifest["sessions"]) == 2 and all(s["from_checkpoint"] for s in summaries)
    assert sim.stats()["requests"]["/api/chat"] == before  # nothing sent again
    assert stats["server"]["server_version"] == sim.options.ollama_version


def test_the_prepared_run_carries_the_architecture_not_the_vocabulary(sim, tmp_path):
    """A verbose /api/show carries the model's whole vocabulary (256,512 entries for the simulated llama3.1:8b);
    Prefect walks every element of `plan_chunks(prepared)`'s parameters before the task starts (1.7 s of CPU on the
    2-core machine), and nothing in a run reads it."""
    prepared = prepare_run(params_for(sim, write_requests(tmp_path / "in.parquet", 4), tmp_path / "runs"))
    assert not any(key.startswith("tokenizer.ggml.") for key in prepared.model_info)
    assert prepared.model_info["llama.block_count"] == 32 and prepared.model_info["general.architecture"] == "llama"


def test_a_conversation_run_planned_before_the_taper_resumes_with_its_own_plan(sim, tmp_path):
    """New conversation runs end with the taper (`chunkwise.plan.chunks.tail_sizes`), recorded as
    `chunk_plan.taper`; a run whose manifest was written before it resumes with the chunks it was cut into,
    not refused for a changed plan."""
    from chunkwise.plan.chunks import plan_chunks
    from chunkwise.store.files import read_json, write_json_atomic

    params = params_for(sim, write_requests(tmp_path / "in.parquet", 60), tmp_path / "runs")
    specs, manifest = plan_run(prepare_run(params))
    assert [s.size for s in specs][-6:] == [5, 5, 2, 2, 1, 1] and manifest["chunk_plan"]["taper"] is True
    path = tmp_path / "runs" / "t" / "manifest.json"
    old = read_json(path)
    before = plan_chunks(60, 10, multiple_of=2)
    old["chunk_plan"] = {**{k: v for k, v in old["chunk_plan"].items() if k != "taper"}, "chunks": len(before)}
    write_json_atomic(path, old)
    resumed, manifest = plan_run(prepare_run(params))
    assert [s.size for s in resumed] == [s.size for s in before] == [10] * 6 and "taper" not in manifest["chunk_plan"]
