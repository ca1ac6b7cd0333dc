"""Memory of a loaded model as /api/ps reports it: weights + KV cache + compute buffers (bytes).

The simulator computes this itself from its profiles (it must not share the client's formula in
`chunkwise.ollama.kv`, or `plan`/`measure` would agree with it by construction).

KV cache: llama.cpp allocates K and V for every layer and every token of `num_ctx x parallel`
(`v0.33.0-rc2:llm/llama_server.go:375-376` passes `-c num_ctx*np -np np`):
`layers x kv_heads x (key_length + value_length) x bytes_per_element` per token.

Compute buffers: when neither the request nor the model sets num_batch, Ollama picks the batch by
effective context (num_ctx x parallel): 512 up to 4096, 1024 up to 32768, 2048 above
(`v0.33.0-rc2:server/sched.go:798-804,859-868`), stepping down while the model would not fit with
headroom (`generationBatchFits`, `sched.go:870-895`: weights+KV above 80 % of free memory, or above
75 % / 60 % for the 1024 / 2048 batches). Its own estimate of the extra compute memory of the larger
batches is 768 MiB and 2 GiB (`generationBatchSurcharge`, `sched.go:906-915`), which the simulator adds
to `size`. /api/ps reports what llama-server logged for its buffers, compute buffers included
(`llm/llama_server.go:2638-2669`).
"""

from __future__ import annotations

from chunkwise.harness.sim.profiles import ModelProfile

MIB = 1024 * 1024
GIB = 1024 * MIB
#: Bytes per cached element; q8_0 / q4_0 are ggml blocks of 32 elements in 34 / 18 bytes.
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
BATCH_DEFAULT, BATCH_MEDIUM, BATCH_LARGE = 512, 1024, 2048  # sched.go:798-801
HEADROOM_PERCENT = {BATCH_MEDIUM: 75, BATCH_LARGE: 60}  # sched.go:803-804
SURCHARGE = {BATCH_DEFAULT: 0, BATCH_MEDIUM: 768 * MIB, BATCH_LARGE: 2 * GIB}  # sched.go:906-915


def kv_bytes(profile: ModelProfile, num_ctx: int, parallel: int, cache_type: str) -> int:
    """KV cache bytes for `num_ctx` tokens in each of `parallel` slots."""
    head_k = profile.key_length or profile.embedding_length // profile.head_count
    head_v = profile.value_length or profile.embedding_length // profile.head_count
    per_token = profile.block_count * profile.head_count_kv * (head_k + head_v) * KV_BYTES[cache_type]
    return int(per_token * num_ctx * parallel)


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


def compute_buffer_bytes(effective_ctx: int, predicted_bytes: int, vram_mib: int) -> int:
    """Extra compute-buffer bytes of the automatic batch over the 512 default."""
    return SURCHARGE[automatic_batch(effective_ctx, predicted_bytes, vram_mib)]


def loaded_size(profile: ModelProfile, num_ctx: int, parallel: int, cache_type: str, vram_mib: int,
                compute_buffers: bool = True) -> int:
    """/api/ps `size` in bytes: weights + KV (+ compute buffers unless `compute_buffers` is off)."""
    base = profile.weights_bytes + kv_bytes(profile, num_ctx, parallel, cache_type)
    return base + (compute_buffer_bytes(num_ctx * parallel, base, vram_mib) if compute_buffers else 0)
