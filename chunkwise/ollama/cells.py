"""How many cells (cached tokens) each layer of a KV cache holds, all slots together, by engine
(`chunkwise.ollama.kv` multiplies them by a layer's bytes per cell; `chunkwise.ollama.graph` spans the mask
over them).

- Ollama's engine (before v0.30; `kvcache/causal.go:130-190` `Causal.Init`, capacity = num_ctx per slot):
  `pad256(num_ctx x parallel)` in a global layer; in a windowed one `pad256(parallel x memory + batch)`,
  memory being the window (4096 for gpt-oss), at least window + 1 with more than one slot, and the full
  cache when memory >= num_ctx (`CachePadding: 256`, `ml/backend/ggml/ggml.go:694-699`; batch
  `min(num_batch 512, num_ctx)`, `llm/server.go:173`).
- llama.cpp (Ollama's llama.cpp runner before v0.30, llama-server): `-c` is the total context of all slots
  and, with explicit `-np`, each slot is a stream of its own (`kv_unified` false) of `pad256(pad256(ctx) /
  parallel)` cells in a global layer (`src/llama-context.cpp:148-165`) and `pad256(min(slot cells, window +
  n_ubatch))` in a windowed one (`src/llama-kv-cache-iswa.cpp`: `size_swa = GGML_PAD(min(size_base, n_swa +
  n_ubatch), 256)`); the runner before v0.30 keeps every layer full (`swa_full`,
  `llama/llama.cpp/src/llama-context.cpp:2393`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chunkwise.ollama.engines import DEFAULT_BATCH, go_engine

if TYPE_CHECKING:
    from chunkwise.ollama.kv import KVLayout

#: Both engines pad their caches to multiples of this many cells.
PAD = 256


def pad(cells: int) -> int:
    """`cells` rounded up to a multiple of `PAD`."""
    return -(-cells // PAD) * PAD


def global_cells(layout: KVLayout, num_ctx: int, parallel: int) -> int:
    """Cells (tokens) a global layer holds in all slots together: Ollama's engine pads the whole cache,
    llama.cpp the context and then each slot's share (see the module docstring)."""
    if go_engine(layout.arch, layout.engine):
        return pad(num_ctx * parallel)
    return pad(pad(num_ctx * parallel) // parallel) * parallel


def swa_cells(layout: KVLayout, num_ctx: int, parallel: int, engine: str, batch: int = DEFAULT_BATCH) -> int:
    """Cells (tokens) the SWA layers hold in all slots together, for a context of `num_ctx` per slot; `batch`
    is the runner's batch (Ollama's engine: num_batch; llama-server: n_ubatch)."""
    if not layout.swa_layers:
        return 0
    if engine == "ollama":  # kvcache/causal.go Init: maxSequences x memory + maxBatch, or the full cache
        memory = max(layout.swa_memory, layout.window + 1) if parallel > 1 else layout.swa_memory
        if memory >= num_ctx:
            return global_cells(layout, num_ctx, parallel)
        return pad(parallel * memory + min(num_ctx, batch))
    slot = global_cells(layout, num_ctx, parallel) // parallel
    return pad(min(slot, layout.window + batch)) * parallel
