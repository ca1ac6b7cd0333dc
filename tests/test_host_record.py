"""The host record of distributed mode: `/api/ps` read on each host (the simulator as the witness of
Ollama's /api/ps shape), per-host rows in stats.json, and those rows in the stats artifact table, where
their answered requests and tokens must add up to the run's totals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chunkwise.cluster import hosts
from chunkwise.cluster.telemetry import HostTelemetry
from chunkwise.ollama.client import OllamaClient
from chunkwise.params import RunParams
from chunkwise.results.stats import compute_stats, stats_table
from chunkwise.run.context import RunContext
from chunkwise.servers import backend_for
from tests.support.backends import request
from tests.test_stats import ROWS, write_results

MIB = 2**20


def context(tmp_path: Path, host: str, model: str) -> RunContext:
    params = RunParams(input_path=str(tmp_path / "in.parquet"), output_dir=str(tmp_path), run_name="r", parallel=2,
                       num_ctx=8192, model=model)
    return RunContext(run_dir=str(tmp_path / "r"), params=params, host=host, system_prompt="",
                      input_fingerprint="x", model_digest="d", server_version="0.12.6", is_simulator=True,
                      send_truncate_false=True, chars_per_token=4.0)


def test_each_shard_records_api_ps_on_its_host_and_a_cpu_spill_shows_in_the_host_row(sim_factory, tmp_path):
    fits, spills = sim_factory(parallel=2), sim_factory(parallel=2, vram_mib=1024)  # 1 GiB: a model spills
    for label, sim in (("gpu1", fits), ("gpu2", spills)):
        with OllamaClient(sim.url) as client:
            model = next(m["name"] for m in client.tags() if m["size"] > 2 * 1024 * MIB)  # bigger than the 1 GiB GPU
            ctx = context(tmp_path, sim.url, model)
            with HostTelemetry(ctx, backend_for("ollama"), client, hosts.host_dir(tmp_path, label)) as telemetry:
                client.chat(request(model, [{"role": "user", "content": "hello"}], num_ctx=8192))
        record = telemetry.ps_record()
        assert record["start"] is None  # nothing loaded before the shard's first request
        end = record["end"]
        assert end["name"] == model and end["context_length"] == 8192 and end["size"] > 1024 * MIB
        assert end["cpu_spill"] is (label == "gpu2")
        hosts.append_fact(tmp_path, label, {"kind": "chunk", "at": 5.0, "chunk": 0, "requests": 1, "ok": 1,
                                            "prompt_tokens": 10, "output_tokens": 3})
        hosts.append_fact(tmp_path, label, {"kind": "shard", "at": 6.0, "outcome": "completed", "digest": "d",
                                            "busy_s": 2.0, "gpu_peak_mib": None, "ollama_ps": record})
    rows = {r["host"]: r for r in hosts.host_rows(tmp_path)}
    assert rows["gpu1"]["ollama_ps"]["size_vram"] == rows["gpu1"]["ollama_ps"]["size"]
    assert rows["gpu1"]["cpu_spill"] is False
    assert rows["gpu2"]["ollama_ps"]["size_vram"] == 1024 * MIB < rows["gpu2"]["ollama_ps"]["size"]
    assert rows["gpu2"]["cpu_spill"] is True
    assert "does not fit in GPU memory" in rows["gpu2"]["ollama_ps"]["spill_warning"]


def host(name: str, ok: int, prompt: int, out: int, **extra: Any) -> dict[str, Any]:
    return {"host": name, "requests": ok + extra.pop("failed", 0), "ok": ok, "prompt_tokens": prompt,
            "output_tokens": out, "busy_s": 2.0, "req_per_s": ok / 2.0, "shards": 1, "gpu_peak_mib": None,
            "ollama_ps": None, "cpu_spill": False, "digest_check": "ok", **extra}


def table(tmp_path: Path, rows: list[dict[str, Any]]) -> dict[str, str]:
    stats = compute_stats(write_results(tmp_path / "results.parquet", ROWS), mode="independent", system_prompt="",
                          chars_per_token=4.0, active_seconds=2.0, chunks=2, extra={"hosts": rows})
    return {r["metric"]: r["value"] for r in stats_table(stats)}


def test_the_stats_table_has_a_row_per_host_and_says_whether_they_add_up(tmp_path):
    # ROWS: 4 answered requests of 100 prompt / 20 generated tokens each, 2 failed, 1 rejected
    ps = {"name": "m:latest", "size": 6000 * MIB, "size_vram": 4000 * MIB, "context_length": 8192, "cpu_spill": True}
    rows = [host("gpu1", 3, 300, 60, failed=2, ollama_ps=ps, cpu_spill=True, gpu_peak_mib=5120.0),
            host("gpu2", 1, 100, 20)]
    values = table(tmp_path, rows)
    gpu1 = next(v for k, v in values.items() if k.startswith("host gpu1:"))
    assert gpu1.startswith("5 / 3, 300 / 60, 1.5, 2.0, GPU peak 5120 MiB")
    assert "/api/ps: m:latest 4000 of 6000 MiB on the GPU, context 8192, CPU SPILL" in gpu1
    assert gpu1.endswith("digest ok")
    assert any(k.startswith("host gpu2:") for k in values)
    summed = values["hosts summed: answered, tokens in / out (run totals)"]
    assert summed.startswith("4, 400 / 80 (run: 4, 400 / 80): add up; requests sent 6, busy 4.0 s")
    short = table(tmp_path, rows[:1])["hosts summed: answered, tokens in / out (run totals)"]
    assert "3, 300 / 60 (run: 4, 400 / 80): DO NOT add up" in short


def test_a_single_host_run_has_no_host_rows(tmp_path):
    assert not any(k.startswith("host") for k in table(tmp_path, []))


def test_the_cluster_demo_table_shows_each_host_its_spill_and_the_summed_requests():
    from chunkwise.harness.cluster.demo import host_table

    text = host_table({"hosts": [host("gpu1", 3, 300, 60, failed=2, cpu_spill=True), host("gpu2", 1, 100, 20)]})
    header, gpu1, gpu2, total = text.splitlines()
    assert header.split()[-2:] == ["cpu_spill", "digest_check"]
    assert gpu1.split()[:5] == ["gpu1", "5", "3", "300", "60"] and gpu1.split()[-2:] == ["True", "ok"]
    assert gpu2.split()[-2:] == ["False", "ok"]
    assert total.split() == ["total", "6", "4", "400", "80"]
