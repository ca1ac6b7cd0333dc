"""GPU memory truth: a background NVML sampler (NVML access and free VRAM: `chunkwise.gpu.nvml`;
the per-GPU aggregates and the samples CSV: `chunkwise.gpu.series`; Ollama's own spill report:
`chunkwise.ollama.ps`).

The sampler measures the machine it runs on; a remote Ollama host needs `chunkwise measure` run
there. It reads NVML (the `pynvml` module of the nvidia-ml-py distribution) every `interval_s`
seconds: per GPU the used and total memory (MiB, from `nvmlDeviceGetMemoryInfo`, so "used" is the
whole device, every process included) and the utilisation (%, `nvmlDeviceGetUtilizationRates`).

Without an NVIDIA driver or GPU nothing fails: the summary says `available: False` with NVML's own
error text as the reason (e.g. "NVML Shared Library Not Found") and the run goes on.

`nvml` is a seam: anything with pynvml's functions (`nvmlInit`, `nvmlShutdown`,
`nvmlDeviceGetCount`, `nvmlDeviceGetHandleByIndex`, `nvmlDeviceGetName`, `nvmlDeviceGetMemoryInfo`,
`nvmlDeviceGetUtilizationRates`) can stand in for it. This module imports only the standard
library at import time, so `python -m chunkwise.gpu.check` runs with nothing but pynvml.py.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chunkwise.gpu.nvml import device_name, error_text, load_nvml
from chunkwise.gpu.series import CSV_NAME, GpuStats, SampleCsv
from chunkwise.units import MIB


class GpuSampler:
    """Samples every visible GPU on a daemon thread from `start()` to `stop()`.

    The first reading, taken in `start()` before the run does anything, is the baseline. Peak and
    mean cover the readings after it: the thread's, those taken by `read_now()`, and a final one
    taken by `stop()`. Each reading is appended to `<out_dir>/gpu_samples.csv` (one row per GPU)
    and flushed at once, so a crash keeps what was sampled. `out_dir=None` writes no file.
    """

    def __init__(self, out_dir: Path | None, interval_s: float = 1.0, nvml: Any = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"GPU sample interval must be > 0 seconds; got {interval_s!r}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.interval_s = float(interval_s)
        self._nvml_arg = nvml
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._gpus: list[GpuStats] = []
        self._available = False
        self._reason: str | None = None
        self._lock = threading.Condition()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._csv: SampleCsv | None = None
        self._samples = 0
        self._t0 = 0.0
        self._latest_total: float | None = None
        self._window_peak: float | None = None
        self._started = False
        self._thread_failed = False
        self._summary: dict[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open NVML, take the baseline and start the thread; on any NVML failure, record why."""
        if self._started:
            raise RuntimeError("GpuSampler.start() was already called; make a new sampler per run")
        self._started = True
        self._t0 = time.monotonic()
        nvml, reason = load_nvml(self._nvml_arg)
        if nvml is None:
            self._reason = reason
            return
        try:
            nvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - any NVML failure means "no GPU numbers", not a crash
            self._reason = error_text(exc)
            return
        self._nvml = nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
            for i in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                total = nvml.nvmlDeviceGetMemoryInfo(handle).total / MIB
                self._handles.append(handle)
                self._gpus.append(GpuStats(i, device_name(nvml.nvmlDeviceGetName(handle)), total))
        except Exception as exc:  # noqa: BLE001
            self._reason = f"reading the GPU list failed: {error_text(exc)}"
            self._shutdown()
            return
        if not self._gpus:
            self._reason = "NVML works but sees no GPU"
            self._shutdown()
            return
        if self.out_dir is not None:
            self._csv = SampleCsv(self.out_dir / CSV_NAME)
        try:
            self._sample(baseline=True)
        except Exception as exc:  # noqa: BLE001
            self._reason = f"the first reading failed: {error_text(exc)}"
            self._close_csv()
            self._shutdown()
            return
        self._available = True
        self._thread = threading.Thread(target=self._loop, name="chunkwise-gpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop the thread (joined before returning), take a last reading, return the summary.

        Calling it again returns the same summary; calling it without `start()` reports that."""
        if self._summary is not None:
            return dict(self._summary)
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join()
        if self._available and self._reason is None:
            try:
                self._sample()
            except Exception as exc:  # noqa: BLE001
                self._reason = f"the last reading failed: {error_text(exc)}"
        if not self._started:
            self._reason = "the sampler was never started"
        self._close_csv()
        self._shutdown()
        self._summary = self._build_summary()
        return dict(self._summary)

    def __enter__(self) -> GpuSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- readings -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._available

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def sample_count(self) -> int:
        """Readings so far, the baseline included."""
        with self._lock:
            return self._samples

    def read_now(self) -> dict[str, float] | None:
        """Take a reading now (it joins the series); the sums over all GPUs, MiB, or None."""
        if not self._available or self._summary is not None:
            return None
        try:
            return self._sample()
        except Exception:  # noqa: BLE001 - the thread records the reason on its next failure
            return None

    def wait_for_samples(self, count: int, timeout_s: float) -> bool:
        """Block until at least `count` readings exist (baseline included) or `timeout_s` passes."""
        with self._lock:
            self._lock.wait_for(
                lambda: self._samples >= count or self._thread_failed or not self._thread_alive(), timeout_s
            )
            return self._samples >= count

    def latest_used_mib(self) -> float | None:
        """Used memory summed over all GPUs at the latest reading, MiB."""
        with self._lock:
            return self._latest_total

    def begin_window(self) -> None:
        """Start tracking the peak of summed used memory from now on (see `window_peak_mib`)."""
        with self._lock:
            self._window_peak = None

    def window_peak_mib(self) -> float | None:
        """Highest summed used memory seen since `begin_window()`, MiB."""
        with self._lock:
            return self._window_peak

    # -- internals ----------------------------------------------------------------------------

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self._sample()
            except Exception as exc:  # noqa: BLE001 - keep what was sampled, say why it stopped
                with self._lock:
                    self._reason = f"sampling stopped after {self._samples} readings: {error_text(exc)}"
                    self._thread_failed = True
                    self._lock.notify_all()
                return

    def _sample(self, baseline: bool = False) -> dict[str, float]:
        nvml = self._nvml
        readings = []
        for handle in self._handles:
            used = nvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
            try:
                util: float | None = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # noqa: BLE001 - not supported on some GPUs (MIG); memory still counts
                util = None
            readings.append((used, util))
        with self._lock:
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            elapsed = round(time.monotonic() - self._t0, 3)
            for stats, (used, util) in zip(self._gpus, readings, strict=True):
                if baseline:
                    stats.baseline_used_mib = used
                else:
                    stats.add(used, util)
                if self._csv is not None:
                    self._csv.row(now, elapsed, stats, used, util)
            if self._csv is not None:
                self._csv.flush()
            total_used = sum(used for used, _ in readings)
            self._latest_total = total_used
            self._window_peak = total_used if self._window_peak is None else max(self._window_peak, total_used)
            self._samples += 1
            self._lock.notify_all()
        return {"used_mib": total_used, "total_mib": sum(g.total_mib for g in self._gpus)}

    def _close_csv(self) -> None:
        with self._lock:  # a concurrent read_now() must not write to a closed file
            if self._csv is not None:
                self._csv.close()
                self._csv = None

    def _shutdown(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - nothing useful to do about a failed shutdown
                pass
            self._nvml = None

    def _build_summary(self) -> dict[str, Any]:
        ok = self._available
        return {
            "available": ok,
            "reason": self._reason,
            "status": "ok" if ok and self._reason is None else f"{'partial' if ok else 'unavailable'}: {self._reason}",
            "interval_s": self.interval_s,
            "samples": self._samples,
            "gpus": [g.as_dict() for g in self._gpus] if ok else [],
            "csv": str(self.out_dir / CSV_NAME) if ok and self.out_dir is not None else None,
        }
