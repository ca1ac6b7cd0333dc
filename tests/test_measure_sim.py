"""chunkwise measure end to end against the simulator (its /api/ps is the memory model)."""

from __future__ import annotations

import csv
import json

import httpx
import pytest
from matplotlib.image import imread

from chunkwise.cli import main
from chunkwise.errors import ServerError, SetupError
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.measure.report import SOURCE_NVML, SOURCE_PS
from chunkwise.measure.run import run_measurement
from chunkwise.ollama.client import OllamaClient
from chunkwise.ollama.kv import kv_mib_per_token
from chunkwise.units import MIB
from flows.measure import artifact_key, measure_flow
from tests.support.fake_nvml import FakeNvml

CONTEXTS = [1000, 2000, 4000, 8000]
FAST = dict(prefill_tps=5e6, decode_tps=2e5)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sim_slope(model: str, parallel: int, cache: str = "f16") -> float:
    """The simulator's own model: size = weights + num_ctx x parallel x KV bytes per token."""
    return kv_mib_per_token(PROFILES[model].model_info(), cache) * parallel


def no_gpu(out_dir):
    """A sampler whose NVML is made unavailable through the seam (whatever this machine has)."""
    class Missing(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("NVML Shared Library Not Found")
    return GpuSampler(out_dir, 3600, nvml=Missing())


class Wrapped:
    """An OllamaClient stand-in that changes one behaviour of a real client."""

    def __init__(self, client, *, drop_num_ctx=False, real_server=False, fail_at=None, old_ps=False):
        self.inner, self.host, self.old_ps = client, client.host, old_ps
        self.drop_num_ctx, self.real_server, self.fail_at = drop_num_ctx, real_server, fail_at

    def version(self):
        data = self.inner.version()
        if self.real_server:
            data["is_simulator"] = False
        return data

    def show(self, model):
        return self.inner.show(model)

    def ps(self):
        models = self.inner.ps()
        if self.old_ps:  # Ollama < 0.10 has no context_length in /api/ps
            models = [{k: v for k, v in m.items() if k != "context_length"} for m in models]
        return models

    def tags(self):
        return self.inner.tags()

    def chat(self, request):
        if self.fail_at == request.options.context_tokens:
            raise ServerError("model requires more system memory (12 GiB) than is available (8 GiB) (status 500)", 500)
        if self.drop_num_ctx:  # like a server that ignores num_ctx (e.g. the OpenAI endpoint)
            body = self.inner.body(request)
            del body["options"]["num_ctx"]
            return self.inner.chat_body(body, request.model)
        return self.inner.chat(request)


def test_llama_slope_table_csv_png(tmp_path):
    with running_simulator(SimOptions(**FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, sampler_factory=no_gpu)
    assert report.vram_source == SOURCE_PS
    expected = sim_slope("llama3.1:8b", 1)
    assert expected == 0.125
    assert report.slope_mib_per_token == pytest.approx(expected, rel=1e-9)  # the 2 % goal, met exactly
    assert abs(report.relative_difference) < 1e-9
    assert report.intercept_mib == pytest.approx(PROFILES["llama3.1:8b"].weights_bytes / MIB, rel=1e-9)
    assert report.fit.r2 == pytest.approx(1.0)
    assert report.ok
    for row in report.rows:
        assert row.status == "ok" and not row.truncated and row.in_fit
        assert row.prompt_eval_count == row.prompt_tokens_expected
        assert row.num_ctx - 32 - max(16, row.num_ctx // 20) == row.prompt_tokens_expected
        assert row.ps_context_length == row.num_ctx
        assert row.prefill_tok_s > 0 and row.decode_tok_s > 0 and row.load_s is not None
    # files
    table = report.md_path.read_text()
    assert "| 8000 | ok | 7568 | 7568 | no |" in table
    assert "0.125000 MiB per context token" in table and "Ollama /api/ps size_vram" in table
    assert "a remote Ollama host needs `chunkwise measure` run there" in table
    assert "unavailable: NVML Shared Library Not Found" in table
    rows = list(csv.DictReader(report.csv_path.open()))
    assert [int(r["num_ctx"]) for r in rows] == CONTEXTS
    weights_mib = PROFILES["llama3.1:8b"].weights_bytes / MIB
    # /api/ps size: weights + KV + Ollama's 768 MiB of compute buffers for num_batch 1024 (8000 > 4096 tokens)
    assert float(rows[-1]["ps_size_vram_mib"]) == pytest.approx(weights_mib + 1000 + 768, abs=1e-3)
    png = report.png_path.read_bytes()
    assert png[:8] == PNG_SIGNATURE
    image = imread(report.png_path)
    assert image.shape[0] > 0 and image.shape[1] > 0
    data = json.loads(report.json_path.read_text())
    assert data["slope_mib_per_token"] == pytest.approx(0.125) and data["vram_source"] == "ps"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measure.csv", "measure.json", "measure.md", "measure.png"]


def test_parallel_two_doubles_the_slope(tmp_path):
    with running_simulator(SimOptions(parallel=2, **FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, parallel=2, sampler_factory=no_gpu)
        # contexts whose effective size (x 2 slots) stays within one num_batch step (<= 4096 tokens)
        wrong = run_measurement(client, "llama3.1:8b", [1000, 2000], tmp_path / "wrong", parallel=1,
                                sampler_factory=no_gpu)
    assert report.slope_mib_per_token == pytest.approx(sim_slope("llama3.1:8b", 2), rel=1e-9) == pytest.approx(0.25)
    assert report.formula_mib_per_token == 0.25 and abs(report.relative_difference) < 1e-9
    assert report.rows[0].formula_kv_mib == 250.0
    # The server runs 2 slots but we said 1: the report says what probably differs.
    assert wrong.relative_difference == pytest.approx(1.0)
    assert any("matches 2 slot(s) of a f16 cache" in n for n in wrong.notes)


@pytest.mark.parametrize(("model", "cache"), [("qwen2.5:7b", "q8_0"), ("gemma2:9b", "f16")])
def test_other_profiles_and_cache_types(tmp_path, model, cache):
    with running_simulator(SimOptions(kv_cache_type=cache, **FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, model, [2000, 4000, 8000, 16000], tmp_path, kv_cache_type=cache,
                                 sampler_factory=no_gpu)
    assert report.slope_mib_per_token == pytest.approx(sim_slope(model, 1, cache), rel=1e-9)
    if model == "gemma2:9b":  # context_length 8192: 16000 is skipped, not clamped
        assert report.rows[-1].status == "skipped" and "context_length 8192" in report.rows[-1].note
        assert report.slope_mib_per_token == pytest.approx(0.328125)
        assert report.ok  # a skipped context is not a failure


def test_server_ignoring_num_ctx_is_flagged_as_truncation(tmp_path):
    options = SimOptions(num_ctx_default=2048, ollama_version="0.13.0", **FAST)  # keep-tail era: cut to num_ctx
    with running_simulator(options) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, drop_num_ctx=True), "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=no_gpu)
    by_ctx = {r.num_ctx: r for r in report.rows}
    assert not by_ctx[1000].truncated and not by_ctx[2000].truncated
    assert by_ctx[1000].ps_context_length == 2048 and not by_ctx[1000].in_fit  # not the context we asked for
    for n in (4000, 8000):
        row = by_ctx[n]
        assert row.truncated and row.prompt_eval_count == 2048
        assert "fills the server's context_length 2048" in row.truncation_reason
        assert not row.in_fit and "not the requested" in row.note
    # No row was loaded at the context it asked for: nothing to fit, nothing to recommend.
    assert report.fit is None
    assert report.recommendation.num_ctx is None and "fewer than two" in report.recommendation.note
    assert not report.ok
    assert "2 of 4 prompts cut" in report.markdown


def test_seed_flaw_flat_memory_is_not_read_as_free_context(tmp_path):
    """The 2025 seed: num_ctx never reached the server and nothing showed the context loaded.
    Memory is flat, prompts are cut, and no num_ctx is recommended from it."""
    options = SimOptions(num_ctx_default=2048, **FAST)
    with running_simulator(options) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, drop_num_ctx=True, old_ps=True), "llama3.1:8b", CONTEXTS,
                                 tmp_path, vram_mib=81920, sampler_factory=no_gpu)
    assert report.slope_mib_per_token == 0 and report.fit.points == 4
    assert [r.truncated for r in report.rows] == [False, False, True, True]
    assert report.recommendation.num_ctx is None and "did not grow" in report.recommendation.note
    assert not report.ok


def test_spill_is_warned_and_left_out_of_the_fit(tmp_path):
    weights = PROFILES["llama3.1:8b"].weights_bytes / MIB
    vram = int(weights + 3000)  # 8000 tokens need 1000 MiB of f16 KV x 4 slots = 4000: spills
    with running_simulator(SimOptions(parallel=4, vram_mib=vram, **FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, parallel=4, sampler_factory=no_gpu)
    spilled = [r for r in report.rows if r.spilled]
    assert [r.num_ctx for r in spilled] == [8000]
    assert report.warnings and "does not fit in GPU memory" in report.warnings[0]
    assert report.slope_mib_per_token == pytest.approx(0.5, rel=1e-9)
    rec = report.recommendation
    assert rec.capacity_mib == pytest.approx(vram) and "spilled" in rec.capacity_source
    # (vram - 1024 margin - weights) / 0.5 = 3952 -> 3072, a multiple of 1024
    assert rec.num_ctx == 3072 and rec.margin_mib == 1024.0


def test_vram_mib_gives_a_recommendation_without_nvml(tmp_path):
    with running_simulator(SimOptions(**FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", [1000, 2000], tmp_path, vram_mib=16384,
                                 sampler_factory=no_gpu)
    rec = report.recommendation
    # (16384 - 1638.4 margin - weights) / 0.125 = 80424.6, rounded down to a multiple of 1024
    weights = PROFILES["llama3.1:8b"].weights_bytes / MIB
    assert rec.num_ctx == int((16384 - 1638.4 - weights) / 0.125) // 1024 * 1024 == 79872
    assert rec.capacity_source == "--vram-mib" and rec.extrapolated


def test_nvml_source_through_the_seam(tmp_path):
    """A fake GPU whose used memory is 700 MiB plus what the simulator says is loaded."""
    with running_simulator(SimOptions(**FAST)) as sim, OllamaClient(sim.url) as client:
        def used(_handle):
            models = httpx.get(f"{sim.url}/api/ps", timeout=10).json()["models"]
            return 700.0 + sum(m["size_vram"] for m in models) / MIB

        fake = FakeNvml(used_fn=used)
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=lambda d: GpuSampler(d, 3600, nvml=fake))
    assert report.vram_source == SOURCE_NVML
    assert report.slope_mib_per_token == pytest.approx(0.125, rel=1e-4)  # NVML reports whole bytes
    assert report.fit_ps.slope_mib_per_token == pytest.approx(0.125, rel=1e-9)
    assert report.intercept_mib == pytest.approx(700 + PROFILES["llama3.1:8b"].weights_bytes / MIB, abs=0.01)
    assert all(r.nvml_used_mib == pytest.approx(r.ps_size_vram_mib + 700, abs=0.1) for r in report.rows)
    rec = report.recommendation
    assert rec.capacity_mib == 81559.0 and rec.num_ctx == 131072 and rec.limited_by == "model context_length"
    assert report.gpu["available"] and report.gpu["samples"] == 1 + len(CONTEXTS) + 1
    assert (tmp_path / "gpu_samples.csv").exists()
    assert "NVML used memory" in report.md_path.read_text()


def test_estimated_prompts_for_a_real_server_calibrate(tmp_path):
    with running_simulator(SimOptions(**FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, real_server=True), "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=no_gpu)
    methods = [r.token_count_method for r in report.rows]
    assert methods[0] == "estimate (4.00 chars/token)"
    assert all("calibrated" in m for m in methods[1:])
    assert not any(r.truncated for r in report.rows)
    # After calibration the prompt size is close to what the server counted.
    last = report.rows[-1]
    assert abs(last.prompt_eval_count - last.prompt_tokens_expected) <= 0.02 * last.prompt_tokens_expected
    assert report.slope_mib_per_token == pytest.approx(0.125, rel=1e-9)


def test_a_failed_context_is_reported_and_the_rest_measured(tmp_path):
    with running_simulator(SimOptions(**FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, fail_at=4000), "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=no_gpu)
        with pytest.raises(SetupError, match="ollama pull nosuch:1b"):
            run_measurement(client, "nosuch:1b", CONTEXTS, tmp_path / "x", sampler_factory=no_gpu)
    failed = [r for r in report.rows if r.status == "failed"]
    assert [r.num_ctx for r in failed] == [4000] and "more system memory" in failed[0].note
    assert report.fit.points == 3 and report.slope_mib_per_token == pytest.approx(0.125)
    assert not report.ok


def test_cli_end_to_end_and_bad_input(tmp_path, capsys):
    with running_simulator(SimOptions(**FAST)) as sim:
        code = main(["measure", "--model", "llama3.1:8b", "--contexts", "1000,2000,4000", "--host", sim.url,
                     "--output-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "measured: 0.125000 MiB per context token" in out and "(measured - formula: +0.00%)" in out
        (run_dir,) = tmp_path.iterdir()
        assert run_dir.name.startswith("measure-llama3.1_8b-")
        assert {p.name for p in run_dir.iterdir()} >= {"measure.md", "measure.csv", "measure.png", "measure.json"}
        assert main(["measure", "--model", "nosuch:1b", "--contexts", "1000,2000", "--host", sim.url,
                     "--output-dir", str(tmp_path / "n")]) == 2
        assert "ollama pull nosuch:1b" in capsys.readouterr().err
    assert main(["measure", "--model", "m", "--contexts", "1000,abc"]) == 2
    assert "--contexts: 'abc' is not a positive whole number" in capsys.readouterr().err
    assert main(["measure", "--model", "m", "--parallel", "0"]) == 2


def test_cli_unreachable_host(tmp_path, capsys):
    from chunkwise.harness.sim.harness import free_port

    code = main(["measure", "--model", "llama3.1:8b", "--contexts", "1000,2000",
                 "--host", f"http://127.0.0.1:{free_port()}", "--output-dir", str(tmp_path)])
    assert code == 2 and "cannot reach Ollama" in capsys.readouterr().err


def test_flow_function_orchestrates(tmp_path):
    from prefect.logging import disable_run_logger

    with running_simulator(SimOptions(**FAST)) as sim, disable_run_logger():
        result = measure_flow.fn(model="llama3.1:8b", contexts=[1000, 2000], host=sim.url,
                                 output_dir=str(tmp_path), parallel=1)
    assert result["slope_mib_per_token"] == pytest.approx(0.125)
    assert result["md_path"].startswith(str(tmp_path)) and json.dumps(result)
    assert artifact_key("llama3.1:8b") == "measure-llama3-1-8b"
    assert artifact_key("hf.co/Org/Model:Q4_K_M") == "measure-hf-co-org-model-q4-k-m"


@pytest.mark.slow
def test_flow_run_creates_the_markdown_artifact(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with running_simulator(SimOptions(**FAST)) as sim:
        result = measure_flow(model="llama3.1:8b", contexts=[1000, 2000], host=sim.url, output_dir=str(tmp_path))
    assert result["slope_mib_per_token"] == pytest.approx(0.125)

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["measure-llama3-1-8b"])))

    import asyncio

    artifacts = asyncio.run(read())
    assert artifacts and artifacts[-1].type == "markdown"
    assert "0.125000 MiB per context token" in artifacts[-1].data
