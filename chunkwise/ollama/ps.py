"""What Ollama's `/api/ps` says about a loaded model's memory, and the CPU-spill warning.

`/api/ps` lists each loaded model with `size` (bytes of the whole runner: weights, KV cache for
`num_ctx x NUM_PARALLEL` tokens, compute buffers) and `size_vram` (the part on the GPU; both from the
runner's `MemorySize()`, `v0.24.0:server/routes.go:2122-2160`). When `0 < size_vram < size` the model
spilled layers to system RAM and runs them on the CPU, several times slower (`api/types.go`
ProcessModelResponse; Ollama issues #7198, #10615, #11773, #14116). A server without a GPU reports
`size_vram: 0` for every model (seen on the CPU-only Ollama 0.24.0 of `make ollama`): nothing is slower
than the alternative there, so that is `cpu_only`, not a spill. `size_vram: 0` for this model while
another loaded model holds GPU memory is a spill of all of it. These figures are Ollama's accounting,
not a GPU measurement; `chunkwise.gpu.sampler` reads the GPU itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chunkwise.ollama.names import find_model
from chunkwise.units import MIB


def memory_view(ps_models: Iterable[Mapping[str, Any]] | None, model: str) -> dict[str, Any] | None:
    """The `/api/ps` entry of `model` with `cpu_only: True` when every loaded model has size_vram 0, else
    `spill_warning` when part (or all, while another model holds GPU memory) of it runs on the CPU; None when
    the model is not loaded."""
    listed = list(ps_models or [])
    entry = ps_entry_for(listed, model)
    if entry is None:
        return None
    if all(_int(m.get("size_vram")) == 0 for m in listed):
        return {**entry, "cpu_only": True}
    warning = spill_warning(entry)
    return {**entry, "spill_warning": warning} if warning else entry


def ps_entry_for(ps_models: Iterable[Mapping[str, Any]] | None, model: str) -> dict[str, Any] | None:
    """The `/api/ps` entry of `model` (Ollama's name rule, `chunkwise.ollama.names`), or None."""
    return find_model(ps_models, model)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def spill_warning(entry: Mapping[str, Any] | None) -> str | None:
    """A loud one-paragraph warning when the model does not fit in GPU memory, else None.

    None also when the entry lacks `size`/`size_vram` (nothing to judge)."""
    if not entry:
        return None
    size, size_vram = _int(entry.get("size")), _int(entry.get("size_vram"))
    if size is None or size_vram is None or size <= 0 or size_vram >= size:
        return None
    on_cpu = size - size_vram
    name = entry.get("name") or entry.get("model") or "the model"
    ctx = entry.get("context_length")
    ctx_text = f" at context_length {ctx}" if ctx else ""
    return (
        f"WARNING: {name}{ctx_text} does not fit in GPU memory: /api/ps size_vram {size_vram / MIB:.0f} MiB "
        f"< size {size / MIB:.0f} MiB, so {on_cpu / MIB:.0f} MiB ({on_cpu / size:.1%}) of it runs from system "
        f"RAM on the CPU and every request will be several times slower. Lower num_ctx or the parallel slots "
        f"(OLLAMA_NUM_PARALLEL), or use a smaller quantisation of the model."
    )
