"""KV-cache size from a model's `/api/show` `model_info` (GGUF metadata).

Formula (the same as Ollama's estimator and llama.cpp's KV buffer, see
`../shared/research/ollama.md` section 6):

    KV bytes per token = block_count x head_count_kv x (key_length + value_length) x bytes_per_element

`key_length`/`value_length` are used when present (Gemma 2 has head size 256, not
embedding_length / head_count = 224); otherwise the head size is embedding_length / head_count.
`head_count_kv` may be a per-layer list, in which case each layer's value counts.

Ollama reserves `num_ctx x NUM_PARALLEL` tokens of cache when it loads the model, so the memory a
run costs is `kv_bytes_per_token x num_ctx x parallel`, whatever the prompts' lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Bytes per cached element: f16 is 2; q8_0 and q4_0 are ggml blocks of 32 elements stored in
#: 34 and 18 bytes (Ollama's own estimator rounds these to 1 and 0.5).
BYTES_PER_ELEMENT: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

MIB = 1024 * 1024


class ModelInfoError(ValueError):
    """`model_info` lacks a key the formula needs."""


def _key(info: Mapping[str, Any], arch: str, name: str) -> Any:
    return info.get(f"{arch}.{name}")


def kv_bytes_per_token(model_info: Mapping[str, Any], cache_type: str = "f16") -> float:
    """Bytes of KV cache one context token costs, for one parallel slot."""
    if cache_type not in BYTES_PER_ELEMENT:
        raise ModelInfoError(f"unknown KV cache type {cache_type!r}; use one of {sorted(BYTES_PER_ELEMENT)}")
    arch = model_info.get("general.architecture")
    if not arch:
        raise ModelInfoError("model_info has no 'general.architecture'")
    blocks = _key(model_info, arch, "block_count")
    kv_heads = _key(model_info, arch, "attention.head_count_kv")
    if blocks is None or kv_heads is None:
        raise ModelInfoError(f"model_info lacks {arch}.block_count or {arch}.attention.head_count_kv")
    key_len = _key(model_info, arch, "attention.key_length")
    value_len = _key(model_info, arch, "attention.value_length")
    if key_len is None or value_len is None:
        heads = _key(model_info, arch, "attention.head_count")
        embedding = _key(model_info, arch, "embedding_length")
        if not heads or not embedding:
            raise ModelInfoError(
                f"model_info lacks {arch}.attention.key_length/value_length and "
                f"{arch}.embedding_length/{arch}.attention.head_count to derive the head size"
            )
        head_size = int(embedding) // int(heads)
        key_len = key_len if key_len is not None else head_size
        value_len = value_len if value_len is not None else head_size
    per_layer = kv_heads if isinstance(kv_heads, list) else [kv_heads] * int(blocks)
    elements = sum(int(n) for n in per_layer[: int(blocks)]) * (int(key_len) + int(value_len))
    return elements * BYTES_PER_ELEMENT[cache_type]


def kv_mib_per_token(model_info: Mapping[str, Any], cache_type: str = "f16") -> float:
    """`kv_bytes_per_token` in MiB."""
    return kv_bytes_per_token(model_info, cache_type) / MIB


def kv_reserved_bytes(model_info: Mapping[str, Any], num_ctx: int, parallel: int = 1, cache_type: str = "f16") -> int:
    """Bytes Ollama reserves at load for `num_ctx` tokens in each of `parallel` slots."""
    return int(kv_bytes_per_token(model_info, cache_type) * num_ctx * parallel)


def training_context(model_info: Mapping[str, Any]) -> int | None:
    """`{arch}.context_length`, the largest `num_ctx` Ollama will use for the model."""
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length") if arch else None
    return int(value) if value is not None else None
