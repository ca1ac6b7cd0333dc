"""The KV formula with sliding-window layers (chunkwise.ollama.kv), for Ollama and llama-server.

Expected numbers come from the engines' sources and logs, not from the formula:
- Gemma 3 270M (metadata of gemma-3-270m-q4_k_m.gguf): 18 layers, 1 KV head, key/value length 256,
  window 512. llama-server at `-c 32768 -np 4` logged "non-SWA KV 96 MiB, SWA KV 60 MiB"
  (llama.cpp 0c1e570 as vendored in llama-cpp-python 0.3.36); the RSS slope with `-np 1` was 3.1 KiB per token.
- A real Ollama 0.24.0 (`make ollama`, OLLAMA_NUM_PARALLEL=4, 2026-12-07) logged "kv cache" 65.2 / 89.2 /
  137.2 / 233.2 MiB at num_ctx 2048 / 4096 / 8192 / 16384 for that model: its engine's cache
  (kvcache/causal.go Causal.Init) holds pad256(4 x num_ctx) cells in the 3 global layers and
  pad256(4 x (512 + 1) + 512) = 2816 in the 15 windowed ones.
"""

from __future__ import annotations

import pytest

from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.ollama.kv import MIB, ModelInfoError, kv_bytes_per_token, kv_layout, kv_reserved_bytes, swa_flags

GEMMA3_270M = {
    "general.architecture": "gemma3", "gemma3.context_length": 32768, "gemma3.embedding_length": 640,
    "gemma3.block_count": 18, "gemma3.attention.head_count": 4, "gemma3.attention.key_length": 256,
    "gemma3.attention.value_length": 256, "gemma3.attention.sliding_window": 512,
    "gemma3.attention.head_count_kv": 1,
}
KIB = 1024


@pytest.mark.parametrize("engine", ["ollama", "llama-server"])
def test_gemma3_only_every_sixth_layer_is_global(engine):
    flags, window = swa_flags(GEMMA3_270M, engine)
    assert window == 512
    assert [i for i, swa in enumerate(flags) if not swa] == [5, 11, 17]
    layout = kv_layout(GEMMA3_270M, engine=engine)
    assert (layout.global_layers, layout.swa_layers) == (3, 15)
    assert kv_bytes_per_token(GEMMA3_270M, engine=engine) == 3 * KIB  # not 18 KiB as if all layers were global


def test_llama_server_reservation_matches_its_log():
    # -c 32768 -np 4: 8192 cells x 4 slots x 3 global layers = 96 MiB; SWA 15 layers x 4 x 1024 cells = 60 MiB
    assert kv_reserved_bytes(GEMMA3_270M, 8192, 4, engine="llama-server") == (96 + 60) * MIB


def test_llama_server_swa_cells_are_padded_and_capped_by_the_slot_context():
    # a 512-token slot: the SWA cache cannot exceed the slot, so every layer holds 512 cells
    assert kv_reserved_bytes(GEMMA3_270M, 512, 1, engine="llama-server") == 18 * KIB * 512
    # window 500 + ubatch 512 = 1012 -> padded to 1024 cells
    info = dict(GEMMA3_270M, **{"gemma3.attention.sliding_window": 500})
    assert kv_reserved_bytes(info, 8192, 1, engine="llama-server") == (3 * 8192 + 15 * 1024) * KIB


def test_llama_server_slope_is_the_global_layers_only():
    a = kv_reserved_bytes(GEMMA3_270M, 4096, 1, engine="llama-server")
    b = kv_reserved_bytes(GEMMA3_270M, 16384, 1, engine="llama-server")
    assert (b - a) / (16384 - 4096) == 3 * KIB


@pytest.mark.parametrize(("num_ctx", "logged_mib"), [(2048, 65.2), (4096, 89.2), (8192, 137.2), (16384, 233.2)])
def test_ollama_gemma3_is_what_a_real_0_24_0_allocated(num_ctx, logged_mib):
    reserved = kv_reserved_bytes(GEMMA3_270M, num_ctx, 4, engine="ollama") / MIB
    assert reserved == (3 * 4 * num_ctx + 15 * 2816) * KIB / MIB
    assert f"{reserved:.1f}" == f"{logged_mib:.1f}"  # the log prints one decimal (65.25 -> 65.2)


def test_ollama_engine_window_rules():
    # one slot: the window itself (512) + the batch; a context within the window: the full cache
    assert kv_reserved_bytes(GEMMA3_270M, 4096, 1, engine="ollama") == (3 * 4096 + 15 * 1024) * KIB
    assert kv_reserved_bytes(GEMMA3_270M, 512, 1, engine="ollama") == 18 * 512 * KIB
    # gpt-oss keeps 4096 cells per slot in its sliding layers (NewSWAMemCache(window, 4096))
    info = PROFILES["gpt-oss:20b"].model_info()
    per_layer_cell = 8 * 128 * 2
    assert kv_reserved_bytes(info, 131072, 1, engine="ollama") == 12 * per_layer_cell * (131072 + 4608)
    assert kv_reserved_bytes(info, 4096, 1, engine="ollama") == 24 * per_layer_cell * 4096  # window >= num_ctx


def test_ollama_keeps_gemma2_full_but_llama_server_windows_it():
    info = PROFILES["gemma2:9b"].model_info()
    full = 42 * 8 * 512 * 2
    assert kv_bytes_per_token(info, engine="ollama") == full
    assert kv_bytes_per_token(info, engine="llama-server") == full / 2  # period 2: 21 global layers
    assert kv_reserved_bytes(info, 8192, 1, engine="ollama") == full * 8192


def test_models_without_a_window_are_unchanged():
    info = PROFILES["llama3.1:8b"].model_info()
    for engine in ("ollama", "llama-server"):
        layout = kv_layout(info, engine=engine)
        assert layout.swa_layers == 0 and layout.global_bytes_per_token == 32 * 8 * 256 * 2
        assert kv_reserved_bytes(info, 8192, 4, engine=engine) == 4 * 1024 * MIB


def test_pattern_from_the_metadata_overrides_the_built_in_period():
    flags = [True, False] * 9
    info = dict(GEMMA3_270M, **{"gemma3.attention.sliding_window_pattern": flags})
    assert kv_layout(info, engine="llama-server").global_layers == 9
    info = dict(GEMMA3_270M, **{"gemma3.attention.sliding_window_pattern": 3})
    assert kv_layout(info, engine="llama-server").global_layers == 6


def test_emptied_per_layer_arrays_fail_loudly_instead_of_counting_zero():
    info = dict(GEMMA3_270M, **{"gemma3.attention.head_count_kv": []})
    with pytest.raises(ModelInfoError, match="verbose"):
        kv_bytes_per_token(info)
    info = dict(GEMMA3_270M, **{"gemma3.attention.sliding_window_pattern": []})
    with pytest.raises(ModelInfoError, match="verbose"):
        kv_bytes_per_token(info, engine="llama-server")


def test_per_layer_head_counts_weight_each_layer():
    heads = [2] * 17 + [8]  # the last layer (global) has more KV heads
    info = dict(GEMMA3_270M, **{"gemma3.attention.head_count_kv": heads})
    layout = kv_layout(info, engine="llama-server")
    assert layout.global_bytes_per_token == (2 + 2 + 8) * 1024
    assert layout.swa_bytes_per_token == 15 * 2 * 1024


def test_plan_reserves_the_window_not_num_ctx_for_sliding_layers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from chunkwise.inputs.scan import validate_only
    from chunkwise.params import RunParams
    from chunkwise.plan.report import build_plan

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["x" * 400, "y" * 400]}), path)
    summary = validate_only(path, num_ctx=8192, num_predict=64)
    p = build_plan(summary, RunParams(input_path=str(path), num_ctx=8192, parallel=4), system_prompt="",
                   model_info=GEMMA3_270M, model_info_source="test", free_vram_mib=None, gpu_reason="none",
                   engine="ollama", server_version="0.24.0")
    assert p.kv_mib_per_token == 3 * KIB / MIB
    # Ollama 0.24.0: 3 global layers x 8192 x 4 + 15 local layers x pad256(4 x 513 + 512), 1 KiB per layer-cell
    assert p.kv_reserved_mib == (3 * 8192 * 4 + 15 * 2816) * KIB / MIB
