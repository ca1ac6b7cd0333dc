"""Reaching NVML (the `pynvml` module of the nvidia-ml-py distribution, or a stand-in with its
functions: the seam tests use) and the free VRAM of this machine's GPUs. Standard library only at
import time, so `python -m chunkwise.gpu.check` runs with nothing but pynvml.py."""

from __future__ import annotations

from typing import Any

from chunkwise.units import MIB


def load_nvml(nvml: Any = None) -> tuple[Any | None, str | None]:
    """The NVML seam to use (the given one, else `pynvml`), or None and why not."""
    if nvml is not None:
        return nvml, None
    try:
        import pynvml
    except ImportError as exc:
        return None, f"pynvml is not importable ({exc}); install nvidia-ml-py"
    return pynvml, None


def error_text(exc: BaseException) -> str:
    """NVML's own message ("NVML Shared Library Not Found", "Driver Not Loaded", ...)."""
    return str(exc) or type(exc).__name__


def device_name(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def free_vram_mib(nvml: Any = None) -> tuple[float | None, str | None]:
    """Free memory summed over every GPU this machine's NVML sees, MiB; or None and the reason."""
    nvml, reason = load_nvml(nvml)
    if nvml is None:
        return None, reason
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return None, error_text(exc)
    try:
        count = int(nvml.nvmlDeviceGetCount())
        if count == 0:
            return None, "NVML works but sees no GPU"
        free = sum(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i)).free for i in range(count))
        return free / MIB, None
    except Exception as exc:  # noqa: BLE001
        return None, f"reading GPU memory failed: {error_text(exc)}"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
