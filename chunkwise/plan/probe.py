"""What `chunkwise plan` asks this machine, read-only: the free GPU memory here (NVML). What it asks the
server is the run's backend's (`chunkwise.backend.Backend.probe`: Ollama's `/api/show` and `/api/tags`,
llama-server's `/props` and the GGUF header of its model), bounded by `chunkwise.backend.PROBE_TIMEOUT_S`.

Neither probe stops a plan: an unreachable server, a missing model or no GPU gives "unknown" with the
reason and what to do, so a plan still shows the chunking and token figures.
"""

from __future__ import annotations

from chunkwise.gpu import nvml


def free_vram() -> tuple[float | None, str | None]:
    """Free GPU memory on this machine, MiB, or None and the reason."""
    try:
        return nvml.free_vram_mib()
    except Exception as exc:  # noqa: BLE001 - a GPU probe must never stop a plan (NVML raises its own classes)
        return None, f"GPU probe failed: {exc}"
