"""The KV layout by server era (issue 19 item 6): `plan`, `measure` and run telemetry follow what the server
of that version allocates, held to the simulator's own model of it (chunkwise/harness/sim/memory.py, written
from Ollama's and llama.cpp's sources), never to the client's formula.

- Ollama >= 0.30 runs every model in llama-server, which windows the sliding-window layers (no `--swa-full`):
  gpt-oss:20b at 128K holds 12 global layers of 24 at full length, about half of the all-global figure the
  client predicted before for every Ollama.
- Before, Ollama's own engine windows gpt-oss too (4096 cells per slot, `NewSWAMemCache`), and gemma2 ran in
  the llama.cpp runner with every layer full (`swa_full`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chunkwise.cli import main
from chunkwise.harness.sim.era import era_of
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.memory import allocation
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.measure.run import run_measurement
from chunkwise.ollama.client import OllamaClient
from chunkwise.ollama.engines import engine_for_version
from chunkwise.params import RunParams
from chunkwise.plan import probe
from chunkwise.run.context import RunContext
from chunkwise.run.reloads import ReloadWatch
from chunkwise.run.telemetry import RunTelemetry
from chunkwise.servers import backend_for
from chunkwise.units import MIB
from tests.test_measure_sim import FAST, no_gpu, server_slope

CURRENT, GO_ERA = "0.33.0-rc2", "0.24.0"
#: Bytes of one cell in one layer: gpt-oss 8 KV heads x (64 + 64) x 2; gemma2 8 x (256 + 256) x 2.
CELL = {"gpt-oss:20b": 8 * 128 * 2, "gemma2:9b": 8 * 512 * 2}
LAYERS = {"gpt-oss:20b": 24, "gemma2:9b": 42}


@pytest.fixture()
def no_gpu_here(monkeypatch):
    monkeypatch.setattr(probe, "free_vram", lambda: (None, "test: no GPU"))


def sim_kv_mib(model: str, num_ctx: int, version: str, parallel: int = 1) -> float:
    """The simulator's own KV cache for the model loaded at `num_ctx` (its /api/ps is built from it)."""
    return allocation(PROFILES[model], num_ctx, parallel, "f16", 81920, era_of(version)).kv / MIB


def plan_json(tmp_path: Path, capsys: Any, url: str, model: str, num_ctx: int, parallel: int = 1) -> dict[str, Any]:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["x" * 400, "y" * 400]}), path)
    assert main(["plan", "--input", str(path), "--host", url, "--model", model, "--num-ctx", str(num_ctx),
                 "--parallel", str(parallel), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_engine_follows_the_version():
    assert [engine_for_version(v) for v in ("0.24.0", "0.29.9", "0.30.0", "0.33.0-rc2", "0.0.0", "")] == [
        "ollama", "ollama", "llama-server", "llama-server", "llama-server", "llama-server"]
    assert backend_for("ollama").kv_engine("0.13.0") == "ollama"
    assert backend_for("openai").kv_engine("b6123") == "llama-server"


@pytest.mark.parametrize(("model", "num_ctx", "global_share"), [
    # 12 of 24 layers hold 131072 cells; 12 hold pad256(128 + 2048 ubatch) = 2304: 0.509 of the old figure
    ("gpt-oss:20b", 131072, 0.509),
    # 21 of 42 hold 8192; 21 hold pad256(4096 + 1024) = 5120 (its window is half its 8K context): 0.8125
    ("gemma2:9b", 8192, 0.8125),
])
def test_plan_on_ollama_0_30_and_later_uses_llama_servers_window(tmp_path, capsys, no_gpu_here, model, num_ctx,
                                                                 global_share):
    with running_simulator(SimOptions(**FAST)) as sim:
        plan = plan_json(tmp_path, capsys, sim.url, model, num_ctx)
    all_global = LAYERS[model] * CELL[model] * num_ctx / MIB  # what the client predicted for every Ollama before
    assert plan["engine"] == "llama-server" and plan["server_version"] == CURRENT
    assert plan["kv_reserved_mib"] == pytest.approx(sim_kv_mib(model, num_ctx, CURRENT), rel=1e-12)
    assert plan["kv_reserved_mib"] / all_global == pytest.approx(global_share, abs=0.001)
    assert plan["kv_mib_per_token"] == LAYERS[model] // 2 * CELL[model] / MIB


@pytest.mark.parametrize(("model", "num_ctx", "expected_cells"), [
    # Ollama's engine: 12 global layers x 131072, 12 sliding ones x pad256(4096 + 512)
    ("gpt-oss:20b", 131072, 12 * 131072 + 12 * 4608),
    # the llama.cpp runner with swa_full: every layer full
    ("gemma2:9b", 8192, 42 * 8192),
])
def test_plan_before_0_30_keeps_that_eras_layout(tmp_path, capsys, no_gpu_here, model, num_ctx, expected_cells):
    with running_simulator(SimOptions(ollama_version=GO_ERA, **FAST)) as sim:
        plan = plan_json(tmp_path, capsys, sim.url, model, num_ctx)
    assert plan["engine"] == "ollama" and plan["server_version"] == GO_ERA
    assert plan["kv_reserved_mib"] == expected_cells * CELL[model] / MIB == pytest.approx(
        sim_kv_mib(model, num_ctx, GO_ERA), rel=1e-12)


def test_measure_on_ollama_0_30_predicts_the_global_layers_only(tmp_path):
    contexts = [1024, 2048, 4096]  # one batch tier (num_batch 512)
    with running_simulator(SimOptions(**FAST)) as sim, OllamaClient(sim.url) as client:
        report = run_measurement(client, "gpt-oss:20b", contexts, tmp_path, sampler_factory=no_gpu)
    assert report.kv_engine == "llama-server"
    assert report.formula_mib_per_token == 12 * CELL["gpt-oss:20b"] / MIB  # not 24 layers' 48 KiB
    assert report.slope_mib_per_token == pytest.approx(server_slope("gpt-oss:20b", contexts, version=CURRENT),
                                                       rel=1e-9)
    assert report.predicted_relative_difference == pytest.approx(0, abs=1e-9)
    assert all(r.formula_kv_mib == pytest.approx(sim_kv_mib("gpt-oss:20b", r.num_ctx, CURRENT)) for r in report.rows)


class _Session:
    """What RunTelemetry reads of a session: its context, backend, client and reload watch (no server: the
    telemetry is entered without the preload)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx, self.backend = ctx, backend_for("ollama")
        self.reloads = ReloadWatch(ctx.params.num_ctx)
        self.client = type("NoServer", (), {"host": "http://127.0.0.1:9", "ps": lambda _self: []})()


@pytest.mark.parametrize("version", [CURRENT, GO_ERA])
def test_run_telemetry_reports_the_kv_of_the_servers_era(tmp_path, version):
    params = RunParams(input_path=str(tmp_path / "in.parquet"), output_dir=str(tmp_path), run_name="r",
                       num_ctx=131072, parallel=2, model="gpt-oss:20b")
    ctx = RunContext(run_dir=str(tmp_path / "r"), params=params, host="http://127.0.0.1:9", system_prompt="",
                     input_fingerprint="x", model_digest="d", server_version=version, is_simulator=True,
                     send_truncate_false=True, chars_per_token=4.0)
    (tmp_path / "r").mkdir()
    info = PROFILES["gpt-oss:20b"].model_info(verbose=True)
    telemetry = RunTelemetry(_Session(ctx), info, load=False)
    with telemetry:
        pass
    assert telemetry.kv_mib == pytest.approx(sim_kv_mib("gpt-oss:20b", 131072, version, parallel=2), abs=0.05)
    assert telemetry.summary["kv_cache_reserved_mib_formula"] == telemetry.kv_mib
