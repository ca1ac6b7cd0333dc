"""GPU and `/api/ps` telemetry of one shard, on the host that runs it.

In distributed mode the GPU is on the worker's machine, so the sampler runs inside the shard flow and
writes `hosts/<label>/gpu_samples.csv` in the shared run directory; the peak (MiB, largest over the
host's GPUs; None without one) goes into the host's row of stats.json. `/api/ps` is read on the same
host at the shard's start and end and recorded in the shard's fact (`ps_record`): Ollama's own account
of the loaded model's size and GPU share there, so a CPU spill on one host shows in that host's row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chunkwise.backend import Backend, ChatClient
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.run.context import RunContext
from chunkwise.run.telemetry import memory_snapshot
from chunkwise.settings import get_settings

#: The `/api/ps` fields a host record keeps (bytes for the sizes, tokens for context_length;
#: Ollama api/types.go ProcessModelResponse).
PS_FIELDS = ("name", "digest", "size", "size_vram", "context_length")


def ps_fields(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The host record's view of one `/api/ps` entry: model name, digest, size and size_vram (bytes),
    context_length (tokens), and `cpu_spill` (size_vram < size: part of the model runs on the CPU)
    with Ollama's figures in `spill_warning`; None when the model is not loaded."""
    if not entry:
        return None
    out: dict[str, Any] = {k: entry.get(k) for k in PS_FIELDS}
    out["name"] = out["name"] or entry.get("model")
    warning = entry.get("spill_warning")  # the backend's judgement (`Backend.memory`)
    out["cpu_spill"] = warning is not None
    if warning:
        out["spill_warning"] = warning
    return out


class HostTelemetry:
    def __init__(self, ctx: RunContext, backend: Backend, client: ChatClient, out_dir: Path) -> None:
        self.ctx = ctx
        self.backend = backend
        self.client = client
        self.sampler = GpuSampler(out_dir, interval_s=get_settings().gpu_sample_interval_s)
        self.summary: dict[str, Any] = {}
        self.gpu_peak_mib: float | None = None

    def __enter__(self) -> HostTelemetry:
        self.sampler.start()
        self.summary["ps_start"] = memory_snapshot(self.backend, self.client, self.ctx.params.model)
        return self

    def __exit__(self, *exc: object) -> None:
        self.summary["ps_end"] = memory_snapshot(self.backend, self.client, self.ctx.params.model)
        gpu = self.sampler.stop()
        peaks = [g.get("peak_used_mib") for g in gpu.get("gpus") or [] if g.get("peak_used_mib") is not None]
        self.gpu_peak_mib = max(peaks) if peaks else None
        self.summary["gpu"] = gpu

    def ps_record(self) -> dict[str, Any]:
        """`/api/ps` on this host at the shard's start and end (`ps_fields` each), for its shard fact."""
        return {"start": ps_fields(self.summary.get("ps_start")), "end": ps_fields(self.summary.get("ps_end"))}
