"""Memory truth around a run: the GPU sampler and Ollama's `/api/ps` view at start and end.

The sampler measures the GPUs of the machine chunkwise runs on. When Ollama runs on another host
its VRAM is invisible here: run `chunkwise measure` on that host instead.
"""

from __future__ import annotations

from typing import Any

from chunkwise.backend import ChatClient
from chunkwise.errors import LLMError
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.logs import RunLogger, logger
from chunkwise.ollama.client import OllamaClient
from chunkwise.ollama.kv import kv_reserved_bytes
from chunkwise.ollama.ps import ps_entry_for, spill_warning
from chunkwise.run.context import RunContext
from chunkwise.settings import get_settings
from chunkwise.units import MIB


def log() -> RunLogger:
    return logger("chunkwise.run.telemetry")


def ps_snapshot(ctx: RunContext, client: ChatClient) -> dict[str, Any] | None:
    """The model's `/api/ps` entry (size, size_vram, context_length), warning loudly on a CPU spill;
    None for an OpenAI-compatible server, which has no such endpoint."""
    if ctx.params.api != "ollama" or not isinstance(client, OllamaClient):
        return None
    try:
        entry = ps_entry_for(client.ps(), ctx.params.model)
    except LLMError as exc:
        log().warning("could not read /api/ps from %s: %s", ctx.host, exc)
        return None
    warning = spill_warning(entry)
    if warning:
        log().warning("%s", warning)
    if entry is not None and warning:
        entry = {**entry, "spill_warning": warning}
    return entry


class RunTelemetry:
    """Context manager: sampler running and `/api/ps` read at start; summary dict at the end."""

    def __init__(self, ctx: RunContext, client: ChatClient, model_info: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        self.client = client
        self.model_info = model_info
        self.sampler = GpuSampler(ctx.dir, interval_s=get_settings().gpu_sample_interval_s)
        self.ps_start: dict[str, Any] | None = None
        self.ps_loaded: dict[str, Any] | None = None
        self._loaded_taken = False
        self.kv_mib: float | None = None
        self.summary: dict[str, Any] = {}

    def __enter__(self) -> RunTelemetry:
        p = self.ctx.params
        if self.model_info:
            try:
                self.kv_mib = round(kv_reserved_bytes(self.model_info, p.num_ctx, p.parallel) / MIB, 1)
            except ValueError:
                self.kv_mib = None
        if self.kv_mib is not None:
            log().info("num_ctx %d x parallel %d: Ollama reserves about %.0f MiB of KV cache at load (%s)",
                       p.num_ctx, p.parallel, self.kv_mib, "formula from /api/show model_info")
        self.sampler.start()
        self.ps_start = ps_snapshot(self.ctx, self.client)  # often empty: the model loads with the first request
        return self

    def after_chunk(self) -> None:
        """Once the first chunk finished the model is loaded: read /api/ps now, so a CPU spill is
        reported early in a long run rather than at its end."""
        if not self._loaded_taken:
            self._loaded_taken = True
            self.ps_loaded = ps_snapshot(self.ctx, self.client)

    def __exit__(self, *exc: object) -> None:
        ps_end = ps_snapshot(self.ctx, self.client)
        gpu = self.sampler.stop()
        self.summary = {
            "gpu": gpu,
            "ollama_ps": {"start": self.ps_start, "after_first_chunk": self.ps_loaded, "end": ps_end},
            "kv_cache_reserved_mib_formula": self.kv_mib,
        }
