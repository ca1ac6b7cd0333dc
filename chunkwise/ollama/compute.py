"""Ollama's automatic `num_batch` and the compute-buffer memory it adds on top of weights and KV.

From v0.30.0 (llama-server engine), when neither the request nor the model sets `num_batch`,
Ollama picks the generation batch from the effective context, `min(num_ctx, training context) x
parallel` (server/sched.go `effectiveLlamaServerContext`, `generationBatchForContext`, tag
v0.33.0-rc2): 512 up to 4,096 tokens, 1,024 up to 32,768, 2,048 above. Its own estimate of the
extra compute buffers of the larger batches (`generationBatchSurcharge`) is 768 MiB for 1,024 and
2 GiB for 2,048 (512 adds nothing). It lowers the batch when the model would use more than 60 %
(2,048) or 75 % (1,024) of the available memory or the surcharge does not fit under 80 % of it,
and uses 512 (256 on GPUs of 8 GiB or less) on CUDA without flash attention: the figures here are
the upper bound a plan must leave room for. Before v0.30 (Go runners) num_batch stayed 512.
"""

from __future__ import annotations

from collections.abc import Callable

#: (largest effective context, num_batch, compute-buffer surcharge MiB), server/sched.go v0.33.0-rc2.
BATCH_STEPS: tuple[tuple[int | None, int, float], ...] = ((4096, 512, 0.0), (32768, 1024, 768.0), (None, 2048, 2048.0))


def effective_context(num_ctx: int, parallel: int, training_context: int | None = None) -> int:
    """Tokens of context llama-server is started with: per-slot num_ctx (clamped) x slots."""
    per_slot = min(num_ctx, training_context) if training_context else num_ctx
    return per_slot * max(parallel, 1)


def automatic_batch(num_ctx: int, parallel: int, training_context: int | None = None) -> int:
    """The num_batch Ollama chooses when memory is not tight."""
    return _step(effective_context(num_ctx, parallel, training_context))[1]


def compute_buffer_mib(num_ctx: int, parallel: int, training_context: int | None = None) -> float:
    """Ollama's estimate of the extra compute buffers for the automatic num_batch, MiB."""
    return _step(effective_context(num_ctx, parallel, training_context))[2]


#: Ollama keeps the larger batches only while the model uses at most this share of the memory
#: (`generationBatchHasHeadroom`), and the surcharge must fit under 80 % of it (`generationBatchFits`).
HEADROOM_PERCENT = {2048: 60, 1024: 75}
SURCHARGE_MIB = {512: 0.0, 1024: 768.0, 2048: 2048.0}


def batch_fits(batch: int, predicted_mib: float, available_mib: float | None) -> bool:
    """`generationBatchFits` (server/sched.go v0.33.0-rc2); unknown memory counts as fitting."""
    if not predicted_mib or not available_mib:
        return True
    threshold = available_mib * 0.80
    if predicted_mib > threshold:
        return False
    if batch in HEADROOM_PERCENT and predicted_mib > available_mib * HEADROOM_PERCENT[batch] / 100:
        return False
    return SURCHARGE_MIB[batch] <= threshold - predicted_mib


def chosen_batch(num_ctx: int, parallel: int, predicted_mib: float | None, available_mib: float | None,
                 training_context: int | None = None) -> int:
    """The num_batch Ollama (v0.30+) chooses for a model whose weights + KV are `predicted_mib`: the context's
    batch, lowered while it does not fit (`automaticGenerationBatch`); unknown memory: the context's."""
    batch = automatic_batch(num_ctx, parallel, training_context)
    while batch > 512 and not batch_fits(batch, predicted_mib or 0.0, available_mib):
        batch = 1024 if batch > 1024 else 512
    return batch


def chosen_surcharge_mib(num_ctx: int, parallel: int, predicted_mib: float, available_mib: float | None,
                         training_context: int | None = None) -> float:
    """Ollama's estimate of the compute buffers it adds for a model whose weights + KV are `predicted_mib`."""
    return SURCHARGE_MIB[chosen_batch(num_ctx, parallel, predicted_mib, available_mib, training_context)]


#: The batch of the Go runners (before v0.30): api.DefaultOptions num_batch, at most num_ctx
#: (`v0.24.0:llm/server.go:173`).
GO_RUNNER_BATCH = 512


def runner_batch(version: str, num_ctx: int, parallel: int, training_context: int | None = None,
                 predicted_mib: float | None = None, available_mib: float | None = None) -> int:
    """The batch (tokens) the runner computes with, which sizes its compute buffers: before v0.30
    `min(512, num_ctx)`; from v0.30 Ollama's automatic num_batch (`chosen_batch`; llama.cpp caps its ubatch
    at the whole context). A num_batch set by the request or the Modelfile is not known here."""
    if not applies(version):
        return min(GO_RUNNER_BATCH, num_ctx)
    return min(chosen_batch(num_ctx, parallel, predicted_mib, available_mib, training_context),
               effective_context(num_ctx, parallel, training_context))


def _step(effective: int) -> tuple[int | None, int, float]:
    for step in BATCH_STEPS:
        if step[0] is None or effective <= step[0]:
            return step
    return BATCH_STEPS[-1]


#: First release with the automatic num_batch (commit 9db4bdb, "use llama-server exclusively").
AUTOMATIC_BATCH_SINCE = (0, 30, 0)


def version_tuple(text: str) -> tuple[int, int, int]:
    """`"0.30.11-rc2"` -> (0, 30, 11); missing or non-numeric parts count as 0."""
    numbers = []
    for part in [*text.strip().lstrip("v").split("-")[0].split("."), "0", "0", "0"][:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    return (numbers[0], numbers[1], numbers[2])


def applies(version: str) -> bool:
    """Whether this server picks num_batch automatically: v0.30.0+, or a source build (0.0.0),
    which is assumed current."""
    v = version_tuple(version)
    return v >= AUTOMATIC_BATCH_SINCE or v == (0, 0, 0)


def term_for(version: str, parallel: int, training_context: int | None = None) -> Callable[[int], float] | None:
    """`num_ctx -> compute-buffer MiB` for this server, or None where it adds none (before v0.30)."""
    if not applies(version):
        return None
    return lambda num_ctx: compute_buffer_mib(num_ctx, parallel, training_context)
