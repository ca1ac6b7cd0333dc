"""The KV formula (chunkwise.ollama.kv) against every built-in simulator profile.

Expected values come from the models' published configurations (see chunkwise/harness/sim/profiles.py), written
as exact fractions of a MiB:
f16 is 2 bytes per element, q8_0 34/32 and q4_0 18/32 (ggml block sizes).
"""

from __future__ import annotations

import pytest

from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.ollama.kv import kv_mib_per_token, kv_reserved_bytes, training_context
from chunkwise.units import MIB

# elements per token = layers x kv heads x (key + value length)
ELEMENTS = {
    "llama3.1:8b": 32 * 8 * 256,
    "llama3.2:3b": 28 * 8 * 256,
    "qwen2.5:7b": 28 * 4 * 256,
    "gemma2:9b": 42 * 8 * 512,
    "qwen3:8b": 36 * 8 * 256,
    # per context token: the 12 global layers of 24 (the even ones slide: Ollama's engine before v0.30,
    # model/models/gptoss/model.go:36-39; llama-server since, src/models/openai-moe-iswa.cpp period 2)
    "gpt-oss:20b": 12 * 8 * 128,
    # per context token: the 3 global layers of 18 (every sixth); the other 15 hold a window
    "gemma3-270m:latest": 3 * 1 * 512,
}


def test_every_profile_is_covered():
    """Every profile but the damaged one (a model that never loads, for the persistent-error tests)."""
    assert set(PROFILES) == set(ELEMENTS) | {"gemma3-270m-damaged:latest"}


@pytest.mark.parametrize(
    ("name", "f16"),
    [("llama3.1:8b", 0.125), ("llama3.2:3b", 0.109375), ("qwen2.5:7b", 0.0546875), ("gemma2:9b", 0.328125)],
)
def test_f16_mib_per_token(name, f16):
    assert kv_mib_per_token(PROFILES[name].model_info(), "f16") == f16


@pytest.mark.parametrize("name", sorted(ELEMENTS))
@pytest.mark.parametrize(("cache", "bytes_per_element"), [("f16", 2), ("q8_0", 34 / 32), ("q4_0", 18 / 32)])
def test_quantised_mib_per_token(name, cache, bytes_per_element):
    assert kv_mib_per_token(PROFILES[name].model_info(), cache) == ELEMENTS[name] * bytes_per_element / MIB


def test_known_quantised_values():
    info = PROFILES["llama3.1:8b"].model_info()
    assert kv_mib_per_token(info, "q8_0") == 0.06640625  # 68 KiB
    assert kv_mib_per_token(info, "q4_0") == 0.03515625  # 36 KiB
    qwen = PROFILES["qwen2.5:7b"].model_info()
    assert kv_mib_per_token(qwen, "q8_0") == 29.75 / 1024 and kv_mib_per_token(qwen, "q4_0") == 15.75 / 1024


def test_gemma2_uses_key_length_not_embedding_over_heads():
    info = PROFILES["gemma2:9b"].model_info()
    assert info["gemma2.embedding_length"] // info["gemma2.attention.head_count"] == 224
    assert kv_mib_per_token(info) == 42 * 8 * (256 + 256) * 2 / MIB


def test_reserved_bytes_scale_with_ctx_and_parallel():
    info = PROFILES["llama3.1:8b"].model_info()
    assert kv_reserved_bytes(info, 8192, 4) == 4 * 1024 * MIB  # ollama.md worked example: 4 GiB
    assert training_context(info) == 131072
