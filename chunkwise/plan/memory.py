"""The memory figures of a plan (`chunkwise.plan.report.build_plan`): the KV cache the server reserves at load,
the part of its compute graph that grows with the context (the attention mask, `chunkwise.ollama.graph`),
Ollama's own estimate of the compute buffers of its automatic num_batch (v0.30+, `chunkwise.ollama.compute`),
whether all of it fits the free VRAM, and how many slots of a context would.

Memory per token of num_ctx and slot is the KV of the global layers plus the mask's share: 3 + 1 KiB for
gemma3-270m on Ollama 0.24.0 (4 slots), which is what its /api/ps size grows by (issue 18; measured in
tests/test_real_ollama.py). The sliding-window layers and the weights are constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from chunkwise.ollama import compute, graph, kv
from chunkwise.ollama.engines import DEFAULT_BATCH, go_engine
from chunkwise.units import MIB

MAX_SLOTS = 64  # RunParams.parallel's upper bound


@dataclass(frozen=True)
class MemoryFigures:
    """MiB unless named otherwise; None where the model's numbers are unknown (`reason` says why)."""

    kv_per_token: float | None  # KV of one more num_ctx token in one slot (the global layers)
    mask_per_token: float | None  # the mask's growth per num_ctx token, per slot (all slots / parallel)
    kv_reserved: float | None  # KV at num_ctx x parallel, sliding-window layers included
    mask: float  # the attention mask at num_ctx x parallel (0 when unknown)
    compute: float  # Ollama's estimate of the larger num_batch's compute buffers (v0.30+; 0 before and elsewhere)
    batch: int  # the runner's batch (num_batch / n_ubatch), tokens
    training: int | None  # the model's training context, tokens
    reason: str | None
    layout: kv.KVLayout | None = None

    @property
    def per_token(self) -> float | None:
        """Memory per num_ctx token and slot: KV + the mask's share."""
        return None if self.kv_per_token is None else self.kv_per_token + (self.mask_per_token or 0.0)

    @property
    def buffers(self) -> float:
        """Compute buffers counted in the fit: at least the mask, at least Ollama's own estimate."""
        return max(self.compute, self.mask)


def memory_figures(model_info: dict[str, Any] | None, source: str, num_ctx: int, parallel: int, cache_type: str,
                   engine: str, version: str, ollama_batch: bool) -> MemoryFigures:
    """The figures for `parallel` slots of `num_ctx` tokens. `ollama_batch`: the server is Ollama, whose
    num_batch follows its version (`compute.runner_batch`); otherwise llama-server's default n_ubatch (512)."""
    if model_info is None:
        reason = source if source.startswith("unknown") else f"model_info unknown ({source})"
        return MemoryFigures(None, None, None, 0.0, 0.0, DEFAULT_BATCH, None, reason)
    training = kv.training_context(model_info)
    batch = compute.runner_batch(version, num_ctx, parallel, training) if ollama_batch else min(
        DEFAULT_BATCH, num_ctx * parallel)
    surcharge = compute.compute_buffer_mib(num_ctx, parallel, training) if ollama_batch and compute.applies(
        version) else 0.0
    try:
        layout = kv.kv_layout(model_info, cache_type, engine)
        reserved = kv.kv_reserved_bytes(model_info, num_ctx, parallel, cache_type, engine, batch) / MIB
    except kv.ModelInfoError as exc:
        return MemoryFigures(None, None, None, 0.0, surcharge, batch, training, str(exc))
    mask_slope = graph.mask_bytes_per_token(layout, parallel, batch) / parallel / MIB
    return MemoryFigures(layout.global_bytes_per_token / MIB, mask_slope, reserved,
                         graph.mask_bytes(layout, num_ctx, parallel, batch) / MIB, surcharge, batch, training, None,
                         layout)


def fixed_buffers(figures: MemoryFigures) -> float:
    """Compute buffers that do not grow with the slot count, MiB: llama.cpp's mask spans one slot's cells
    (and Ollama's estimate covers it); Ollama's engine's spans every slot (`slots_that_fit` counts it per slot)."""
    if figures.layout is not None and go_engine(figures.layout.arch, figures.layout.engine):
        return figures.compute
    return figures.buffers


def slots_that_fit(figures: MemoryFigures, available_mib: float | None, ctx: int) -> int | None:
    """Slots of `ctx` tokens whose KV (and, where the mask spans every slot, its mask) fit `available_mib`
    (free memory less weights and `fixed_buffers`); None when either is unknown."""
    if available_mib is None or not figures.kv_per_token or figures.layout is None:
        return None
    per_slot = figures.kv_per_token
    if go_engine(figures.layout.arch, figures.layout.engine):
        per_slot += graph.MASK_BYTES * figures.batch / MIB
    return max(0, min(MAX_SLOTS, math.floor(available_mib / (per_slot * ctx))))
