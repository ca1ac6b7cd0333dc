"""chunkwise measure end to end against the simulator (its /api/ps is the memory model).

The simulator runs as Ollama 0.24.0 (`SIM`): its /api/ps size is what that server's runner allocates
(sim/memory.py): weights, the KV cache padded to 256 cells, and a compute graph that grows with the
context by its f16 attention mask (2 bytes x batch 512 per cell). So `measure` must recover the server's
slope exactly (`server_slope`), and that slope is a little above the formula's KV bytes per token
(+0.8 % for llama3.1:8b; contexts that are not multiples of 256 add their padding), as on a real server;
the prediction that adds the mask (`chunkwise.ollama.graph`) meets it. From v0.30 Ollama chooses a larger
batch past 4096 tokens, whose buffers are the server's own, not Ollama's estimate of them: `measure` fits
the slope within one batch tier and reports the other tiers as measured offsets
(`test_the_batch_steps_of_v0_30_are_fitted_per_tier_not_subtracted`).
"""

from __future__ import annotations

import csv
import json

import httpx
import pytest
from matplotlib.image import imread

from chunkwise.cli import main
from chunkwise.errors import ServerError, SetupError
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.harness.sim.era import era_of
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.memory import allocation
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.measure.report import SOURCE_NVML, SOURCE_PS, SOURCE_PS_SIZE
from chunkwise.measure.run import run_measurement
from chunkwise.ollama.client import OllamaClient
from chunkwise.units import MIB
from flows.measure import artifact_key, measure_flow
from tests.support.fake_nvml import FakeNvml

#: Multiples of 1024: a runner pads its cache to 256 cells, so other contexts would add their padding to the slope.
CONTEXTS = [1024, 2048, 4096, 8192]
FAST = dict(prefill_tps=5e6, decode_tps=2e5)
ERA = "0.24.0"
SIM = dict(FAST, ollama_version=ERA)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: KV bytes per context token and slot from the published configurations (layers x KV heads x (key + value)
#: x bytes per element), in MiB.
PUBLISHED = {("llama3.1:8b", "f16"): 32 * 8 * 256 * 2 / MIB, ("qwen2.5:7b", "q8_0"): 28 * 4 * 256 * 34 / 32 / MIB,
             ("gemma2:9b", "f16"): 42 * 8 * 512 * 2 / MIB}


def server_sizes_mib(model: str, contexts: list[int], parallel: int = 1, cache: str = "f16",
                     version: str = ERA, vram_mib: int = 81920) -> list[float]:
    """What the simulated server's /api/ps says at each context (its own memory model)."""
    return [allocation(PROFILES[model], n, parallel, cache, vram_mib, era_of(version)).total / MIB for n in contexts]


def server_slope(model: str, contexts: list[int], parallel: int = 1, cache: str = "f16", version: str = ERA) -> float:
    """The least-squares slope of the server's sizes against the context, MiB per token."""
    sizes = server_sizes_mib(model, contexts, parallel, cache, version)
    mx, my = sum(contexts) / len(contexts), sum(sizes) / len(sizes)
    return sum((x - mx) * (y - my) for x, y in zip(contexts, sizes, strict=True)) / sum((x - mx) ** 2 for x in contexts)


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
    with running_simulator(SimOptions(**SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, sampler_factory=no_gpu)
    assert report.vram_source == SOURCE_PS
    measured = server_slope("llama3.1:8b", CONTEXTS)
    assert report.slope_mib_per_token == pytest.approx(measured, rel=1e-9)  # the server's own slope, exactly
    assert report.formula_mib_per_token == PUBLISHED[("llama3.1:8b", "f16")] == 0.125
    # within the 2 % goal: the compute graph's mask and the 256-cell padding of a real runner
    assert report.relative_difference == pytest.approx(measured / 0.125 - 1) and 0 < report.relative_difference < 0.02
    # the prediction adds the compute graph's f16 mask, 2 bytes x num_batch 512 per token: exact at these contexts
    assert report.mask_mib_per_token == 1024 / MIB and report.batch == 512 and report.kv_engine == "ollama"
    assert report.predicted_mib_per_token == 0.125 + 1024 / MIB
    assert report.predicted_relative_difference == pytest.approx(0, abs=1e-12)
    weights = PROFILES["llama3.1:8b"].weights_bytes / MIB
    assert weights < report.intercept_mib < weights + 200  # the weights and one batch's activations
    assert report.fit.r2 == pytest.approx(1.0, abs=1e-4)
    assert report.ok
    for row in report.rows:
        assert row.status == "ok" and not row.truncated and row.in_fit
        assert row.prompt_eval_count == row.prompt_tokens_expected
        assert row.num_ctx - 32 - max(16, row.num_ctx // 20) == row.prompt_tokens_expected
        assert row.ps_context_length == row.num_ctx
        assert row.prefill_tok_s > 0 and row.decode_tok_s > 0 and row.load_s is not None
    # files
    table = report.md_path.read_text()
    assert "| 8192 | ok | 7751 | 7751 | no |" in table
    assert f"{measured:.6f} MiB per context token" in table and "Ollama /api/ps size_vram" in table
    assert "a remote Ollama host needs `chunkwise measure` run there" in table
    assert "unavailable: NVML Shared Library Not Found" in table
    rows = list(csv.DictReader(report.csv_path.open()))
    assert [int(r["num_ctx"]) for r in rows] == CONTEXTS
    assert [float(r["ps_size_vram_mib"]) for r in rows] == pytest.approx(server_sizes_mib("llama3.1:8b", CONTEXTS),
                                                                          abs=1e-3)
    png = report.png_path.read_bytes()
    assert png[:8] == PNG_SIGNATURE
    image = imread(report.png_path)
    assert image.shape[0] > 0 and image.shape[1] > 0
    data = json.loads(report.json_path.read_text())
    assert data["slope_mib_per_token"] == pytest.approx(measured) and data["vram_source"] == "ps"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measure.csv", "measure.json", "measure.md", "measure.png"]


def test_parallel_two_doubles_the_slope(tmp_path):
    with running_simulator(SimOptions(parallel=2, **SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, parallel=2, sampler_factory=no_gpu)
        # contexts whose effective size (x 2 slots) stays within one num_batch step (<= 4096 tokens)
        wrong = run_measurement(client, "llama3.1:8b", [1024, 2048], tmp_path / "wrong", parallel=1,
                                sampler_factory=no_gpu)
    assert report.slope_mib_per_token == pytest.approx(server_slope("llama3.1:8b", CONTEXTS, 2), rel=1e-9)
    assert report.formula_mib_per_token == 0.25 and 0 < report.relative_difference < 0.02
    assert report.rows[0].formula_kv_mib == 256.0  # 1024 tokens x 2 slots x 0.125 MiB
    # The server runs 2 slots but we said 1: the report says what probably differs.
    assert wrong.relative_difference == pytest.approx(1.0, abs=0.01)  # twice the formula (+ the mask's 1 KiB)
    assert any("matches 2 slot(s) of a f16 cache" in n for n in wrong.notes)


@pytest.mark.parametrize(("model", "cache"), [("qwen2.5:7b", "q8_0"), ("gemma2:9b", "f16")])
def test_other_profiles_and_cache_types(tmp_path, model, cache):
    with running_simulator(SimOptions(kv_cache_type=cache, **SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, model, [2048, 4096, 8192, 16384], tmp_path, kv_cache_type=cache,
                                 sampler_factory=no_gpu)
    measured = [r.num_ctx for r in report.rows if r.in_fit]
    assert report.slope_mib_per_token == pytest.approx(server_slope(model, measured, 1, cache), rel=1e-9)
    assert report.formula_mib_per_token == pytest.approx(PUBLISHED[(model, cache)])
    # the mask adds 1 KiB per token: 0.3 % of gemma2's 336 KiB, 3.4 % of a q8_0 qwen2.5's 29.75 KiB
    assert report.relative_difference == pytest.approx(1 / 1024 / PUBLISHED[(model, cache)], rel=1e-6)
    if model == "gemma2:9b":  # context_length 8192: 16384 is skipped, not clamped
        assert report.rows[-1].status == "skipped" and "context_length 8192" in report.rows[-1].note
        assert report.ok  # a skipped context is not a failure


def test_server_ignoring_num_ctx_is_flagged_as_truncation(tmp_path):
    options = SimOptions(num_ctx_default=2048, ollama_version="0.13.0", **FAST)  # keep-tail era: cut to num_ctx
    with running_simulator(options) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, drop_num_ctx=True), "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=no_gpu)
    by_ctx = {r.num_ctx: r for r in report.rows}
    assert not by_ctx[1024].truncated and not by_ctx[2048].truncated
    assert by_ctx[1024].ps_context_length == 2048 and not by_ctx[1024].in_fit  # not the context we asked for
    for n in (4096, 8192):
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
    options = SimOptions(num_ctx_default=2048, **SIM)
    with running_simulator(options) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, drop_num_ctx=True, old_ps=True), "llama3.1:8b", CONTEXTS,
                                 tmp_path, vram_mib=81920, sampler_factory=no_gpu)
    assert report.slope_mib_per_token == 0 and report.fit.points == 4
    assert [r.truncated for r in report.rows] == [False, False, True, True]
    assert report.recommendation.num_ctx is None and "did not grow" in report.recommendation.note
    assert not report.ok


def test_spill_is_warned_and_left_out_of_the_fit(tmp_path):
    weights = PROFILES["llama3.1:8b"].weights_bytes / MIB
    vram = int(weights + 3000)  # 8192 tokens need 1024 MiB of f16 KV x 4 slots = 4096: spills
    with running_simulator(SimOptions(parallel=4, vram_mib=vram, **SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, parallel=4, sampler_factory=no_gpu)
    spilled = [r for r in report.rows if r.spilled]
    assert [r.num_ctx for r in spilled] == [8192]
    assert report.warnings and "does not fit in GPU memory" in report.warnings[0]
    assert report.slope_mib_per_token == pytest.approx(server_slope("llama3.1:8b", CONTEXTS[:3], 4), rel=1e-9)
    rec = report.recommendation
    assert rec.capacity_mib == pytest.approx(vram) and "spilled" in rec.capacity_source
    # (vram - 1024 margin - weights and activations) / 0.5 MiB per token: about 3700 -> 3072 (multiple of 1024)
    assert rec.num_ctx == 3072 and rec.margin_mib == 1024.0


def test_a_capacity_without_a_fit_still_writes_every_file(tmp_path):
    """One context and --vram-mib: no line, no recommendation, and the plot without a margin to draw (the
    PNG writer formatted the missing margin and raised, so measure ended in a traceback)."""
    with running_simulator(SimOptions(**SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", [2048], tmp_path, vram_mib=16384, sampler_factory=no_gpu)
    assert report.fit is None and report.recommendation.num_ctx is None
    assert report.recommendation.capacity_mib == 16384 and report.recommendation.margin_mib is None
    assert report.png_path.read_bytes()[:8] == PNG_SIGNATURE and "fewer than two" in report.markdown


def test_vram_mib_gives_a_recommendation_without_nvml(tmp_path):
    with running_simulator(SimOptions(**SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", [1000, 2000], tmp_path, vram_mib=16384,
                                 sampler_factory=no_gpu)
    rec = report.recommendation
    # (16384 - 1638.4 margin - intercept) / slope, rounded down to a multiple of 1024
    expected = int((16384 - 1638.4 - report.intercept_mib) / report.slope_mib_per_token) // 1024 * 1024
    assert rec.num_ctx == expected and 70_000 < expected < 80_000
    assert rec.capacity_source == "--vram-mib" and rec.extrapolated


def test_nvml_source_through_the_seam(tmp_path):
    """A fake GPU whose used memory is 700 MiB plus what the simulator says is loaded."""
    with running_simulator(SimOptions(**SIM)) as sim, OllamaClient(sim.url) as client:
        def used(_handle):
            models = httpx.get(f"{sim.url}/api/ps", timeout=10).json()["models"]
            return 700.0 + sum(m["size_vram"] for m in models) / MIB

        fake = FakeNvml(used_fn=used)
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=lambda d: GpuSampler(d, 3600, nvml=fake))
    assert report.vram_source == SOURCE_NVML
    slope = server_slope("llama3.1:8b", CONTEXTS)
    assert report.slope_mib_per_token == pytest.approx(slope, rel=1e-4)  # NVML reports whole bytes
    assert report.fit_ps.slope_mib_per_token == pytest.approx(slope, rel=1e-9)
    assert report.intercept_mib == pytest.approx(700 + report.fit_ps.intercept_mib, abs=0.01)
    assert all(r.nvml_used_mib == pytest.approx(r.ps_size_vram_mib + 700, abs=0.1) for r in report.rows)
    rec = report.recommendation
    assert rec.capacity_mib == 81559.0 and rec.num_ctx == 131072 and rec.limited_by == "model context_length"
    assert report.gpu["available"] and report.gpu["samples"] == 1 + len(CONTEXTS) + 1
    assert (tmp_path / "gpu_samples.csv").exists()
    assert "NVML used memory" in report.md_path.read_text()


def test_estimated_prompts_for_a_real_server_calibrate(tmp_path):
    with running_simulator(SimOptions(**SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, real_server=True), "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=no_gpu)
    methods = [r.token_count_method for r in report.rows]
    assert methods[0] == "estimate (4.00 chars/token)"
    assert all("calibrated" in m for m in methods[1:])
    assert not any(r.truncated for r in report.rows)
    # After calibration the prompt size is close to what the server counted.
    last = report.rows[-1]
    assert abs(last.prompt_eval_count - last.prompt_tokens_expected) <= 0.02 * last.prompt_tokens_expected
    assert report.slope_mib_per_token == pytest.approx(server_slope("llama3.1:8b", CONTEXTS), rel=1e-9)


def test_a_failed_context_is_reported_and_the_rest_measured(tmp_path):
    with running_simulator(SimOptions(**SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(Wrapped(client, fail_at=4096), "llama3.1:8b", CONTEXTS, tmp_path,
                                 sampler_factory=no_gpu)
        with pytest.raises(SetupError, match="ollama pull nosuch:1b"):
            run_measurement(client, "nosuch:1b", CONTEXTS, tmp_path / "x", sampler_factory=no_gpu)
    failed = [r for r in report.rows if r.status == "failed"]
    assert [r.num_ctx for r in failed] == [4096] and "more system memory" in failed[0].note
    assert report.fit.points == 3
    assert report.slope_mib_per_token == pytest.approx(server_slope("llama3.1:8b", [1024, 2048, 8192]), rel=1e-9)
    assert not report.ok


def test_cli_end_to_end_and_bad_input(tmp_path, capsys):
    with running_simulator(SimOptions(**SIM)) as sim:
        code = main(["measure", "--model", "llama3.1:8b", "--contexts", "1024,2048,4096", "--host", sim.url,
                     "--output-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert code == 0, out
        slope = server_slope("llama3.1:8b", [1024, 2048, 4096])
        assert f"measured: {slope:.6f} MiB per context token" in out
        assert f"(measured - formula: {slope / 0.125 - 1:+.2%})" in out
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

    with running_simulator(SimOptions(**SIM)) as sim, disable_run_logger():
        result = measure_flow.fn(model="llama3.1:8b", contexts=[1000, 2000], host=sim.url,
                                 output_dir=str(tmp_path), parallel=1)
    assert result["slope_mib_per_token"] == pytest.approx(server_slope("llama3.1:8b", [1000, 2000]))
    assert result["md_path"].startswith(str(tmp_path)) and json.dumps(result)
    assert artifact_key("llama3.1:8b") == "measure-llama3-1-8b"
    assert artifact_key("hf.co/Org/Model:Q4_K_M") == "measure-hf-co-org-model-q4-k-m"


@pytest.mark.slow
def test_flow_run_creates_the_markdown_artifact(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with running_simulator(SimOptions(**SIM)) as sim:
        result = measure_flow(model="llama3.1:8b", contexts=[1000, 2000], host=sim.url, output_dir=str(tmp_path))
    slope = server_slope("llama3.1:8b", [1000, 2000])
    assert result["slope_mib_per_token"] == pytest.approx(slope)

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["measure-llama3-1-8b"])))

    import asyncio

    artifacts = asyncio.run(read())
    assert artifacts and artifacts[-1].type == "markdown"
    assert f"{slope:.6f} MiB per context token" in artifacts[-1].data


def test_the_batch_steps_of_v0_30_are_fitted_per_tier_not_subtracted(tmp_path):
    """Ollama v0.30+ runs 1024, 2048 and 4096 at num_batch 512 and 8192 at 1024: the step is what the runner
    allocates for the larger batch (its activations and mask: about 124 MiB here), not the 768 MiB Ollama plans
    with. Subtracting the estimate put the 8192 reading 644 MiB low and the slope off by 18 %."""
    with running_simulator(SimOptions(**FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, vram_mib=16384, sampler_factory=no_gpu)
    version = sim.options.ollama_version
    assert report.kv_engine == "llama-server" and report.server_version == version
    assert abs(report.slope_mib_per_token / 0.125 - 1) < 0.05
    assert report.slope_mib_per_token == pytest.approx(server_slope("llama3.1:8b", CONTEXTS[:3], version=version),
                                                       rel=1e-9)
    assert [(r.batch, r.in_fit) for r in report.rows] == [(512, True), (512, True), (512, True), (1024, False)]
    assert report.batch == 512 and report.predicted_relative_difference == pytest.approx(0, abs=1e-9)
    step = server_sizes_mib("llama3.1:8b", CONTEXTS, version=version)[3] - report.fit.predict(8192)
    (other,) = [t for t in report.tiers if t["batch"] == 1024]
    assert other["contexts"] == (8192,) and other["offset_mib"] == pytest.approx(step) and 100 < step < 200
    assert any("num_batch 1024 (contexts 8192): +124.0 MiB" in n and "+768 MiB" in n for n in report.notes)
    # where the recommendation lands (about 90 % of the memory) Ollama keeps num_batch 512: the main line decides
    budget = 16384 - 1638.4 - report.intercept_mib
    assert report.recommendation.num_ctx == int(budget / report.slope_mib_per_token) // 1024 * 1024
    assert "not measured" not in report.recommendation.note


def test_a_cpu_only_server_is_measured_from_size_not_left_out_as_spilled(tmp_path):
    """/api/ps size_vram 0 at every context (a CPU-only server, like the real Ollama tier's): the model's memory
    is `size`, all in RAM. Before, every context counted as a CPU spill and nothing was fitted."""
    with running_simulator(SimOptions(vram_mib=0, **SIM)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "llama3.1:8b", CONTEXTS, tmp_path, vram_mib=16384, sampler_factory=no_gpu)
    assert report.vram_source == SOURCE_PS_SIZE and not report.warnings
    assert all(r.in_fit and not r.spilled and r.ps_size_vram_mib == 0 for r in report.rows)
    assert report.slope_mib_per_token == pytest.approx(server_slope("llama3.1:8b", CONTEXTS), rel=1e-9)
    assert report.predicted_relative_difference == pytest.approx(0, abs=1e-9)
    assert any("size_vram is 0 at every context" in n for n in report.notes)
    assert "Ollama /api/ps size (size_vram 0 at every context" in report.markdown
    assert report.recommendation.num_ctx and report.recommendation.capacity_source == "--vram-mib"
