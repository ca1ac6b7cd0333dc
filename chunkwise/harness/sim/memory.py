"""Memory of a loaded model as /api/ps reports it: what the runner allocates (bytes).

/api/ps `size` is the runner's own account of its buffers: in the Go-runner eras the "model weights",
"kv cache" and "compute graph" it logs ("total memory", `v0.24.0:ml/device.go:245-272`; /api/ps size
equalled that total on a real 0.24.0), from v0.30 what llama-server logged for its buffers
(`v0.33.0-rc2:llm/llama_server.go:2638-2669`). The simulator models each part from the architecture,
per engine (`era.engine_of`), not from Ollama's or the client's estimates:

Weights: the tensor data; Ollama's own engine loads a tied token embedding a second time as the output
layer (`ModelProfile.tied_embedding_bytes`).

KV cache, per layer `head_count_kv x (key_length + value_length) x bytes_per_element` per cell:
- Ollama's engine (`v0.24.0:kvcache/causal.go:130-190`, `Causal.Init`): cells are padded to 256
  (`ml/backend/ggml/ggml.go:694-699`, CachePadding). A global layer holds `num_ctx x parallel` cells; a
  sliding-window layer holds `parallel x memory + batch` cells, memory = the window (gemma2, gemma3:
  `NewSWACache`) or 4096 (gpt-oss: `NewSWAMemCache(window, 4096)`), at least window + 1 with more than
  one slot, and the full context when that is not smaller than num_ctx.
- llama.cpp pads the context to 256 cells and then each slot's share again
  (`v0.24.0:llama/llama.cpp/src/llama-context.cpp:148-165`): a slot holds
  `pad256(pad256(num_ctx x parallel) / parallel)` cells.
- the vendored llama.cpp runner (llama, qwen2, gemma2 before v0.30): `swa_full` is on
  (`llama-context.cpp:2393`), every layer holds every slot's cells.
- llama-server (v0.30+; Ollama passes no `--swa-full`): a global layer holds the slot's cells, a
  sliding-window layer `pad256(min(num_ctx, window + n_ubatch))` per slot (llama.cpp
  `src/llama-kv-cache-iswa.cpp`; measured in research real-engine.md: 3 global + 15 SWA layers of
  gemma3-270m at `-c 32768 -np 4`: 96 MiB + 60 MiB).
Which layers slide (`swa_layer`): gemma3 all but every sixth, gemma2 and gpt-oss the even ones, cohere2
three of every four: in Ollama's engine `model/models/gemma3/model_text.go:241-246`,
`model/models/gemma2/model.go:192`, `model/models/gptoss/model.go:38-39`; in llama.cpp (vendored in
v0.24.0) `src/llama-model.cpp:1244-1248,1270-1273,1463-1465,2155-2161` with `set_swa_pattern(n)`: layer i
slides when `i % n < n - 1` (`src/llama-hparams.cpp:8-18`).

Compute buffers (flash attention on): the peak activations of one layer for a batch, plus the f16
attention mask (cells x batch x 2 bytes) of each distinct cache (global, windowed) the batch attends to:
`batch x 4 x (3 x ffn + 2 x embedding + 2 x head_count x key_length) + 2 x batch x mask cells`. The
mask term is the slope a real 0.24.0 showed: +1 MiB per 1,024 cells at batch 512, +2 MiB at 1,024. The
activation term is exact for gemma3-270m (37.0 KiB per batch token; 18.5 MiB at batch 512) and is a
structural guess (FFN gate, up and product; residual; queries and attention output) for other models.
Measured "compute graph" of gemma3-270m on 0.24.0, 4 slots (2026-12-06) against this model:

    num_ctx x batch   256x256  512x512  1024x512  2048x512  4096x512  8192x512  2048x128  2048x1024
    real MiB              9.2     20.5      25.2      29.2      37.2      53.2       7.2       59.5
    model MiB             9.8     20.5      25.2      29.2      37.2      53.2       7.2       59.5

With the weights and KV above, /api/ps `size` comes out to the byte of the real one at 8 of these 9
loads (8192 x 1024 too: 689,349,120 bytes); at 256 x 256 it is 0.5 MiB high.

llama-server's per-slot streams attend to one slot's cells (gemma3-270m at -c 32768 -np 4, n_ubatch 512:
model 27.5 MiB, measured 26.8 MiB).

The batch: `min(num_batch, num_ctx)` with num_batch 512 in the Go-runner eras (`v0.24.0:llm/server.go:
173`); from v0.30 Ollama's automatic choice by effective context (512 up to 4096, 1024 up to 32768,
2048 above), stepped down while the model would not fit (`v0.33.0-rc2:server/sched.go:798-804,822-835,
859-895`). That decision uses Ollama's own surcharge estimate (768 MiB / 2 GiB); the bytes reported are
this module's, not the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunkwise.harness.sim.era import Era, engine_of
from chunkwise.harness.sim.profiles import ModelProfile

MIB = 1024 * 1024
GIB = 1024 * MIB
#: Bytes per cached element; q8_0 / q4_0 are ggml blocks of 32 elements in 34 / 18 bytes.
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
PAD = 256
GO_RUNNER_BATCH = 512  # api.DefaultOptions num_batch
BATCH_DEFAULT, BATCH_MEDIUM, BATCH_LARGE = 512, 1024, 2048  # sched.go:798-801
HEADROOM_PERCENT = {BATCH_MEDIUM: 75, BATCH_LARGE: 60}  # sched.go:803-804
SURCHARGE = {BATCH_DEFAULT: 0, BATCH_MEDIUM: 768 * MIB, BATCH_LARGE: 2 * GIB}  # sched.go:906-915, decision only
#: Layers per sliding-window period (all but the last of each period slide).
SWA_PERIOD = {"gemma3": 6, "gemma2": 2, "gptoss": 2, "cohere2": 4}
#: Sliding-window cache memory per slot where Ollama's engine keeps more than the window.
SWA_MEMORY = {"gptoss": 4096}
MASK_BYTES = 2  # f16 mask with flash attention
#: Share of GPU memory a paged-KV engine takes at start: vLLM's `gpu_memory_utilization` default 0.9
#: (`vllm/config/cache.py`, CacheConfig).
PAGED_MEMORY_SHARE = 0.9
ACTIVATION_BYTES = 4  # f32 activations


def swa_layer(arch: str, layer: int) -> bool:
    """Whether `layer` of `arch` attends over a sliding window (see the module docstring)."""
    period = SWA_PERIOD.get(arch)
    return period is not None and layer % period < period - 1


@dataclass(frozen=True)
class Allocation:
    weights: int
    kv: int
    compute: int
    batch: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


def _pad(cells: int) -> int:
    return -(-cells // PAD) * PAD


def cell_bytes(profile: ModelProfile, cache_type: str) -> float:
    """KV bytes of one cell in one layer."""
    head_k = profile.key_length or profile.embedding_length // profile.head_count
    head_v = profile.value_length or profile.embedding_length // profile.head_count
    return profile.head_count_kv * (head_k + head_v) * KV_BYTES[cache_type]


def activation_bytes(profile: ModelProfile) -> int:
    """Peak activation bytes per batch token (see the module docstring)."""
    ffn = profile.feed_forward_length * int(profile.extra_info.get(f"{profile.arch}.expert_used_count", 1))
    head_k = profile.key_length or profile.embedding_length // profile.head_count
    return ACTIVATION_BYTES * (3 * ffn + 2 * profile.embedding_length + 2 * profile.head_count * head_k)


def _layer_cells(engine: str, profile: ModelProfile, num_ctx: int, parallel: int, batch: int) -> tuple[int, int, int]:
    """(cells of a global layer, cells of a sliding-window layer, cells one batch's mask covers)."""
    window = profile.sliding_window or 0
    if engine != "ollama":  # llama.cpp: n_ctx padded, then each slot's share padded again
        per_slot = _pad(_pad(num_ctx * parallel) // parallel)
        swa = _pad(min(num_ctx, window + batch)) if window and engine == "llama-server" else per_slot
        return per_slot * parallel, swa * parallel, per_slot + (swa if swa < per_slot else 0)
    total = _pad(num_ctx * parallel)
    if not window:
        return total, total, total
    memory = SWA_MEMORY.get(profile.arch, window)
    if parallel > 1:
        memory = max(memory, window + 1)
    if memory >= num_ctx:
        return total, total, total
    swa = _pad(parallel * memory + batch)
    return total, swa, total + swa


def batch_size(engine: str, num_ctx: int, parallel: int, predicted: int, vram_mib: int,
               num_batch: int | None = None) -> int:
    """The batch the runner is started with; `num_batch` is a request's option (None: the default)."""
    if engine != "llama-server":
        return min(num_batch or GO_RUNNER_BATCH, num_ctx)
    return num_batch or automatic_batch(num_ctx * parallel, predicted, vram_mib)


def allocation(profile: ModelProfile, num_ctx: int, parallel: int, cache_type: str, vram_mib: int,
               era: Era, num_batch: int | None = None) -> Allocation:
    """What the runner for `profile` allocates for `parallel` slots of `num_ctx` tokens."""
    engine = engine_of(era, profile.arch)
    weights = profile.resident_tensor_bytes + (profile.tied_embedding_bytes if engine == "ollama" else 0)
    per_cell = cell_bytes(profile, cache_type)
    rough_kv = int(per_cell * profile.block_count * num_ctx * parallel)  # for the batch decision only
    batch = batch_size(engine, num_ctx, parallel, weights + rough_kv, vram_mib, num_batch)
    glob, swa, mask = _layer_cells(engine, profile, num_ctx, parallel, batch)
    cells = sum(swa if swa_layer(profile.arch, i) and profile.sliding_window else glob
                for i in range(profile.block_count))
    compute = batch * activation_bytes(profile) + MASK_BYTES * batch * mask
    return Allocation(weights, int(per_cell * cells), compute, batch)


def _batch_for_context(effective_ctx: int) -> int:
    if effective_ctx > 32768:
        return BATCH_LARGE
    if effective_ctx > 4096:
        return BATCH_MEDIUM
    return BATCH_DEFAULT


def _fits(batch: int, predicted: int, available: int) -> bool:
    """`generationBatchFits` (sched.go:870-895)."""
    if predicted == 0 or available == 0:
        return True
    threshold = available * 80 // 100
    if predicted > threshold:
        return False
    if batch in HEADROOM_PERCENT and predicted > available * HEADROOM_PERCENT[batch] // 100:
        return False
    return SURCHARGE[batch] <= threshold - predicted


def automatic_batch(effective_ctx: int, predicted_bytes: int, vram_mib: int) -> int:
    """Ollama's automatic num_batch (`automaticGenerationBatch`, sched.go:822-835, flash attention on)."""
    batch = _batch_for_context(effective_ctx)
    available = vram_mib * MIB
    while batch > BATCH_DEFAULT and not _fits(batch, predicted_bytes, available):
        batch = BATCH_MEDIUM if batch > BATCH_MEDIUM else BATCH_DEFAULT
    return batch


def loaded_size(profile: ModelProfile, num_ctx: int, parallel: int, cache_type: str, vram_mib: int, era: Era,
                compute_buffers: bool = True, kv_layout: str = "reserved") -> int:
    """/api/ps `size` in bytes: weights + KV (+ compute buffers unless `compute_buffers` is off).

    `kv_layout` "paged" (the fast-engine preset, vLLM and SGLang): the engine takes
    `PAGED_MEMORY_SHARE` of the GPU for weights, activations and a KV block pool, whatever the slots and
    context, so the size is that share (or weights + compute buffers when those alone are larger)."""
    alloc = allocation(profile, num_ctx, parallel, cache_type, vram_mib, era)
    if kv_layout == "paged":
        return max(alloc.weights + alloc.compute, int(vram_mib * MIB * PAGED_MEMORY_SHARE))
    return alloc.total if compute_buffers else alloc.weights + alloc.kv
