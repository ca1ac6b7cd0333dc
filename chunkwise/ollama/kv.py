"""KV-cache size from a model's GGUF metadata (Ollama's `/api/show` `model_info`, or the file's
header read by `chunkwise.openai.gguf` for llama-server), sliding-window layers included.

Per layer and per cached token (the K and V tensors of Ollama's `kvcache/causal.go` and of llama.cpp's
KV buffer):

    bytes = head_count_kv[layer] x (key_length + value_length) x bytes_per_element

`key_length`/`value_length` are used when present (Gemma 2 has head size 256, not
embedding_length / head_count = 224); otherwise the head size is embedding_length / head_count.
`head_count_kv` may be a per-layer list, in which case each layer's value counts; an empty list is
what Ollama's `/api/show` sends for long arrays without `verbose: true`, and is refused.

Global layers cache every context token. Sliding-window (SWA) layers cache a fixed window, so a
model such as Gemma 3 (5 of every 6 layers SWA) costs far less per context token than its layer
count suggests. Which layers are SWA is the engine's (`chunkwise.ollama.engines`, by server version): in
llama.cpp the layer pattern is `{arch}.attention.sliding_window_pattern` when the GGUF has it (a period or
one flag per layer), else the architecture's built-in period (`SWA_PERIODS`: layer i is SWA when
`i % N < N - 1`); llama.cpp's runner before v0.30 keeps every layer full. How many cells each layer holds,
by engine: `chunkwise.ollama.cells`.

So memory against context is a line: the slope is the global layers' bytes per token, the SWA
layers add a constant once the context exceeds the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chunkwise.ollama.cells import global_cells, swa_cells
from chunkwise.ollama.engines import DEFAULT_BATCH, ENGINES, GO_ENGINE_SWA, LLAMA_CPP_NAMES, SWA_PERIODS
from chunkwise.units import MIB

#: Bytes per cached element: f16 is 2; q8_0 and q4_0 are ggml blocks of 32 elements stored in
#: 34 and 18 bytes (Ollama's own estimator rounds these to 1 and 0.5).
BYTES_PER_ELEMENT: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

DEFAULT_WINDOWS: dict[str, int] = {"gemma2": 4096}

class ModelInfoError(ValueError):
    """`model_info` lacks a key the formula needs."""


@dataclass(frozen=True)
class KVLayout:
    """Bytes per cached token per slot, split into global and sliding-window layers."""

    global_bytes_per_token: float
    swa_bytes_per_token: float
    window: int  # tokens; 0 when no layer is SWA
    global_layers: int
    swa_layers: int
    engine: str
    arch: str = ""
    #: Cells per slot a windowed layer keeps besides the batch (the window; 4096 for gpt-oss in Ollama's engine).
    swa_memory: int = 0


def _key(info: Mapping[str, Any], arch: str, name: str) -> Any:
    return info.get(f"{arch}.{name}")


def _per_layer_kv_heads(info: Mapping[str, Any], arch: str, blocks: int) -> list[int]:
    kv_heads = _key(info, arch, "attention.head_count_kv")
    if kv_heads is None:
        raise ModelInfoError(f"model_info lacks {arch}.attention.head_count_kv")
    if isinstance(kv_heads, list):
        if not kv_heads:
            raise ModelInfoError(
                f"{arch}.attention.head_count_kv is an empty list: Ollama's /api/show empties per-layer arrays "
                "unless called with verbose: true; ask /api/show with verbose to get the per-layer KV heads")
        if len(kv_heads) < blocks:
            raise ModelInfoError(f"{arch}.attention.head_count_kv has {len(kv_heads)} values for {blocks} layers")
        return [int(n) for n in kv_heads[:blocks]]
    return [int(kv_heads)] * blocks


def _head_sizes(info: Mapping[str, Any], arch: str) -> tuple[int, int]:
    key_len = _key(info, arch, "attention.key_length")
    value_len = _key(info, arch, "attention.value_length")
    if key_len is None or value_len is None:
        heads = _key(info, arch, "attention.head_count")
        embedding = _key(info, arch, "embedding_length")
        if not heads or not embedding or isinstance(heads, list):
            raise ModelInfoError(
                f"model_info lacks {arch}.attention.key_length/value_length and "
                f"{arch}.embedding_length/{arch}.attention.head_count to derive the head size")
        head_size = int(embedding) // int(heads)
        key_len = key_len if key_len is not None else head_size
        value_len = value_len if value_len is not None else head_size
    return int(key_len), int(value_len)


def swa_flags(info: Mapping[str, Any], engine: str = "ollama") -> tuple[list[bool], int]:
    """(one flag per layer: True = sliding-window, window tokens) as `engine` lays the cache out."""
    if engine not in ENGINES:
        raise ModelInfoError(f"unknown engine {engine!r}; use one of {ENGINES}")
    arch = str(info.get("general.architecture") or "")
    blocks = int(_key(info, arch, "block_count") or 0)
    window = int(_key(info, arch, "attention.sliding_window") or DEFAULT_WINDOWS.get(arch, 0))
    none = [False] * blocks, 0
    if window <= 0:
        return none
    if engine == "ollama":
        if arch not in GO_ENGINE_SWA:
            return none
        is_swa = GO_ENGINE_SWA[arch][0]
        return [is_swa(i) for i in range(blocks)], window
    pattern = _key(info, arch, "attention.sliding_window_pattern")
    if isinstance(pattern, list) and pattern:
        if len(pattern) < blocks:
            raise ModelInfoError(
                f"{arch}.attention.sliding_window_pattern has {len(pattern)} flags for {blocks} layers"
            )
        return [bool(p) for p in pattern[:blocks]], window
    if isinstance(pattern, list):  # emptied by a non-verbose /api/show
        raise ModelInfoError(f"{arch}.attention.sliding_window_pattern is an empty list; ask /api/show with verbose")
    name = LLAMA_CPP_NAMES.get(arch, arch)
    if pattern is not None:
        period, dense_first = int(pattern), SWA_PERIODS.get(name, (0, False))[1]
    elif name in SWA_PERIODS:
        period, dense_first = SWA_PERIODS[name]
    else:
        return none  # unknown pattern: count every layer as global (an upper bound)
    if dense_first:
        flags = [period == 0 or i % period != 0 for i in range(blocks)]
    else:
        flags = [period == 0 or i % period < period - 1 for i in range(blocks)]
    return flags, window


def kv_layout(model_info: Mapping[str, Any], cache_type: str = "f16", engine: str = "ollama") -> KVLayout:
    """Bytes per cached token of one slot, global and SWA layers apart, for `engine`."""
    if cache_type not in BYTES_PER_ELEMENT:
        raise ModelInfoError(f"unknown KV cache type {cache_type!r}; use one of {sorted(BYTES_PER_ELEMENT)}")
    arch = model_info.get("general.architecture")
    if not arch:
        raise ModelInfoError("model_info has no 'general.architecture'")
    blocks = _key(model_info, arch, "block_count")
    if blocks is None:
        raise ModelInfoError(f"model_info lacks {arch}.block_count")
    blocks = int(blocks)
    heads = _per_layer_kv_heads(model_info, arch, blocks)
    key_len, value_len = _head_sizes(model_info, arch)
    flags, window = swa_flags(model_info, engine)
    per_element = BYTES_PER_ELEMENT[cache_type] * (key_len + value_len)
    glob = sum(h for h, swa in zip(heads, flags, strict=True) if not swa) * per_element
    swa = sum(h for h, s in zip(heads, flags, strict=True) if s) * per_element
    memory = window
    if engine == "ollama" and arch in GO_ENGINE_SWA:
        memory = GO_ENGINE_SWA[arch][1] or window
    return KVLayout(glob, swa, window if swa else 0, flags.count(False), flags.count(True), engine, arch,
                    memory if swa else 0)


def kv_bytes_per_token(model_info: Mapping[str, Any], cache_type: str = "f16", engine: str = "ollama") -> float:
    """Bytes of KV cache one more context token costs in one slot: the global layers' share (the
    slope of memory against context once the context exceeds the sliding window)."""
    return kv_layout(model_info, cache_type, engine).global_bytes_per_token


def kv_mib_per_token(model_info: Mapping[str, Any], cache_type: str = "f16", engine: str = "ollama") -> float:
    """`kv_bytes_per_token` in MiB."""
    return kv_bytes_per_token(model_info, cache_type, engine) / MIB


def kv_reserved_bytes(model_info: Mapping[str, Any], num_ctx: int, parallel: int = 1, cache_type: str = "f16",
                      engine: str = "ollama", batch: int = DEFAULT_BATCH) -> int:
    """Bytes the engine reserves at load for `num_ctx` tokens in each of `parallel` slots (for
    llama-server that is `-c num_ctx x parallel -np parallel`)."""
    layout = kv_layout(model_info, cache_type, engine)
    swa = layout.swa_bytes_per_token * swa_cells(layout, num_ctx, parallel, engine, batch)
    return int(layout.global_bytes_per_token * global_cells(layout, num_ctx, parallel) + swa)


def training_context(model_info: Mapping[str, Any]) -> int | None:
    """`{arch}.context_length`, the largest `num_ctx` Ollama will use for the model."""
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length") if arch else None
    return int(value) if value is not None else None
