"""`chunkwise measure --local-engine` on the real engine: llama-server restarted per context, memory
(RSS without a GPU) at load against the context, compared with the KV formula including Gemma 3's
sliding-window layers. Asserts the structure and the slope within a tolerance, never the text."""

from __future__ import annotations

import json

import pytest

from chunkwise.cli import main
from chunkwise.harness.llama_server.build import binary_works
from chunkwise.harness.llama_server.paths import engine_paths
from chunkwise.ollama.kv import MIB

pytestmark = [pytest.mark.slow, pytest.mark.engine]
KIB_PER_TOKEN = 3  # Gemma 3 270M: 3 global layers x 1 KV head x (256 + 256) x 2 bytes


def test_measure_openai_fits_the_sliding_window_formula(tmp_path, capsys):
    paths = engine_paths()
    if not binary_works(paths.server) or not paths.model.is_file():
        pytest.fail("the real engine is not set up: run `make engine`")
    code = main(["measure", "--local-engine", "--contexts", "2048,8192,16384", "--prompt-tokens", "64",
                 "--num-predict", "4", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    (run_dir,) = tmp_path.iterdir()
    report = json.loads((run_dir / "measure.json").read_text())
    assert report["api"] == "openai" and report["vram_source"] in ("rss", "nvml")
    assert [r["status"] for r in report["rows"]] == ["ok"] * 3
    assert all(r["prompt_eval_count"] > 32 and r["load_mib"] > 0 for r in report["rows"])
    # the formula counts only the 3 global layers: 3 KiB per token, not 18 KiB as if all 18 grew
    assert report["formula_mib_per_token"] == KIB_PER_TOKEN * 1024 / MIB
    slope_kib = report["slope_mib_per_token"] * 1024
    assert abs(slope_kib - KIB_PER_TOKEN) / KIB_PER_TOKEN < 0.25, slope_kib
    # the sliding-window layers are a constant: the reservation at 16384 is not 6 x 18 KiB x 14336 more
    rows = {r["num_ctx"]: r for r in report["rows"]}
    assert rows[16384]["load_mib"] - rows[2048]["load_mib"] < 100
    for name in ("measure.md", "measure.csv", "measure.png"):
        assert (run_dir / name).stat().st_size > 0
    assert "KiB per context token" in (run_dir / "measure.md").read_text()
