"""GPU memory truth: a background NVML sampler, free VRAM, and Ollama's own spill report.

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

import csv
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chunkwise.ollama.ps import ps_entry_for, spill_warning
from chunkwise.units import MIB

__all__ = ["GpuSampler", "free_vram_mib", "load_nvml", "ps_entry_for", "spill_warning"]

CSV_NAME = "gpu_samples.csv"
CSV_FIELDS = ("time_utc", "elapsed_s", "gpu", "used_mib", "total_mib", "util_pct")


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


def _name(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class _GpuStats:
    """Running aggregates of one GPU (memory in MiB, utilisation in %)."""

    def __init__(self, index: int, name: str, total_mib: float) -> None:
        self.index, self.name, self.total_mib = index, name, total_mib
        self.baseline_used_mib: float | None = None
        self.peak_used_mib = 0.0
        self.sum_used = 0.0
        self.count = 0
        self.peak_util: float | None = None
        self.sum_util = 0.0
        self.count_util = 0

    def add(self, used_mib: float, util: float | None) -> None:
        self.peak_used_mib = max(self.peak_used_mib, used_mib) if self.count else used_mib
        self.sum_used += used_mib
        self.count += 1
        if util is not None:
            self.peak_util = util if self.peak_util is None else max(self.peak_util, util)
            self.sum_util += util
            self.count_util += 1

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)

        return {
            "index": self.index,
            "name": self.name,
            "total_mib": r(self.total_mib),
            "baseline_used_mib": r(self.baseline_used_mib),
            "peak_used_mib": r(self.peak_used_mib) if self.count else r(self.baseline_used_mib),
            "mean_used_mib": r(self.sum_used / self.count) if self.count else r(self.baseline_used_mib),
            "peak_util_pct": r(self.peak_util),
            "mean_util_pct": r(self.sum_util / self.count_util) if self.count_util else None,
        }


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
        self._gpus: list[_GpuStats] = []
        self._available = False
        self._reason: str | None = None
        self._lock = threading.Condition()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._csv_file: Any = None
        self._csv: Any = None
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
                self._gpus.append(_GpuStats(i, _name(nvml.nvmlDeviceGetName(handle)), total))
        except Exception as exc:  # noqa: BLE001
            self._reason = f"reading the GPU list failed: {error_text(exc)}"
            self._shutdown()
            return
        if not self._gpus:
            self._reason = "NVML works but sees no GPU"
            self._shutdown()
            return
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / CSV_NAME
            new = not path.exists() or path.stat().st_size == 0
            if not new:
                drop_torn_last_line(path)
            self._csv_file = path.open("a", newline="", encoding="utf-8")
            self._csv = csv.writer(self._csv_file)
            if new:
                self._csv.writerow(CSV_FIELDS)
                self._csv_file.flush()
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
                    u = "" if util is None else f"{util:g}"
                    self._csv.writerow((now, elapsed, stats.index, f"{used:.1f}", f"{stats.total_mib:.1f}", u))
            if self._csv_file is not None:
                self._csv_file.flush()
            total_used = sum(used for used, _ in readings)
            self._latest_total = total_used
            self._window_peak = total_used if self._window_peak is None else max(self._window_peak, total_used)
            self._samples += 1
            self._lock.notify_all()
        return {"used_mib": total_used, "total_mib": sum(g.total_mib for g in self._gpus)}

    def _close_csv(self) -> None:
        with self._lock:  # a concurrent read_now() must not write to a closed file
            if self._csv_file is not None:
                self._csv_file.close()
                self._csv_file = self._csv = None

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


def drop_torn_last_line(path: Path) -> None:
    """A crash can leave half a row at the end of the CSV; cut it so the next session's first row
    starts on its own line."""
    with path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


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
