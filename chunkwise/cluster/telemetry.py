"""GPU and `/api/ps` telemetry of one shard, on the host that runs it.

In distributed mode the GPU is on the worker's machine, so the sampler runs inside the shard flow and
writes `hosts/<label>/gpu_samples.csv` in the shared run directory; the peak (MiB, largest over the
host's GPUs; None without one) goes into the host's row of stats.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chunkwise.backend import ChatClient
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.run.context import RunContext
from chunkwise.run.telemetry import ps_snapshot
from chunkwise.settings import get_settings


class HostTelemetry:
    def __init__(self, ctx: RunContext, client: ChatClient, out_dir: Path) -> None:
        self.ctx = ctx
        self.client = client
        self.sampler = GpuSampler(out_dir, interval_s=get_settings().gpu_sample_interval_s)
        self.summary: dict[str, Any] = {}
        self.gpu_peak_mib: float | None = None

    def __enter__(self) -> HostTelemetry:
        self.sampler.start()
        self.summary["ps_start"] = ps_snapshot(self.ctx, self.client)
        return self

    def __exit__(self, *exc: object) -> None:
        self.summary["ps_end"] = ps_snapshot(self.ctx, self.client)
        gpu = self.sampler.stop()
        peaks = [g.get("peak_used_mib") for g in gpu.get("gpus") or [] if g.get("peak_used_mib") is not None]
        self.gpu_peak_mib = max(peaks) if peaks else None
        self.summary["gpu"] = gpu
