"""The part of a runner's compute buffers that grows with the context: the attention mask.

For every batch both engines build a mask of [cells the batch may attend to x batch tokens] for each KV
cache the model uses (the global one, and a windowed one for sliding-window models) and, with flash
attention, cast it to f16 inside the compute graph, whose buffers are reserved at load for the worst case:
every cell of the cache.

- Ollama's engine (before v0.30, read in v0.24.0): `kvcache/causal.go:362-388` (`buildMask`) spans the cells
  of all slots' sequences (at reserve the whole cache: `:233-243`) and casts the mask to
  `CacheConfig.MaskDType`, F16 under flash attention (`ml/backend/ggml/ggml.go:694-699`); a wrapper cache
  (gemma3, gpt-oss) does so for each of its caches (`kvcache/wrapper.go`).
- llama.cpp (Ollama's runner before v0.30, llama-server): the mask is [n_kv, n_tokens / n_stream, 1, n_stream],
  one slot's cells x the batch, cast to f16 with flash attention (`src/llama-graph.cpp:1626-1629`; two for a
  sliding-window model, base and SWA: `:1835-1849`), reserved with n_tokens = n_ubatch and n_kv = the cache
  size (`src/llama-context.cpp:394-428`, `src/llama-kv-cache.cpp:1985`).

So the compute graph grows by 2 bytes x batch per cell: per token of num_ctx, 2 x batch x parallel in
Ollama's engine (its mask spans every slot) and 2 x batch in llama.cpp (one slot's). gemma3-270m on a real
Ollama 0.24.0 (4 slots, batch 512, 2026-12-07) logged "compute graph" 29.2 / 37.2 / 53.2 / 85.2 MiB at
num_ctx 2048 / 4096 / 8192 / 16384: 4 KiB per token, 1 KiB per token and slot beside its 3 KiB of KV.

Without flash attention the mask stays f32 and the attention scores ([cells x batch x heads], f32) grow
faster still: not predicted here. Flash attention is Ollama's default for the models of its list
(`v0.24.0:fs/ggml/ggml.go:890-907`, `llm/server.go:195-210`) and llama-server's `auto` (Ollama v0.30+)
turns it on where the device supports it; `OLLAMA_FLASH_ATTENTION=0` turns it off.
"""

from __future__ import annotations

from chunkwise.ollama.cells import global_cells, swa_cells
from chunkwise.ollama.engines import go_engine
from chunkwise.ollama.kv import KVLayout

#: Bytes per mask element with flash attention (f16).
MASK_BYTES = 2


def mask_bytes(layout: KVLayout, num_ctx: int, parallel: int, batch: int) -> int:
    """Bytes of the f16 attention masks in the compute graph of a runner with `parallel` slots of `num_ctx`
    tokens and a batch of `batch` tokens (Ollama's num_batch, llama-server's n_ubatch)."""
    cells = global_cells(layout, num_ctx, parallel)
    if layout.swa_layers:
        cells += swa_cells(layout, num_ctx, parallel, layout.engine, batch)
    if not go_engine(layout.arch, layout.engine):
        cells //= parallel  # llama.cpp: one stream per slot, the mask spans one slot's cells
    return MASK_BYTES * batch * cells


def mask_bytes_per_token(layout: KVLayout, parallel: int, batch: int) -> float:
    """What one more token of num_ctx adds to the masks, all slots together, bytes (past the window)."""
    return MASK_BYTES * batch * (parallel if go_engine(layout.arch, layout.engine) else 1)
