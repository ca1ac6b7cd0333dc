"""What the GPU sampler (`chunkwise.gpu.sampler`) keeps of its readings: running aggregates per
GPU (memory in MiB, utilisation in %) and the samples file, one CSV row per GPU per reading,
appended and flushed at once so a crash keeps what was sampled."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from chunkwise.store.layout import GPU_SAMPLES

#: The sampler's file in the directory it writes to (a run's, a host's, a measurement's).
CSV_NAME = GPU_SAMPLES
CSV_FIELDS = ("time_utc", "elapsed_s", "gpu", "used_mib", "total_mib", "util_pct")


class GpuStats:
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


class SampleCsv:
    """`gpu_samples.csv`, opened for appending (a resumed run adds to the same file after cutting a
    torn last line); the header is written once, into a new or empty file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            drop_torn_last_line(path)
        self._file = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(CSV_FIELDS)
            self._file.flush()

    def row(self, now: str, elapsed_s: float, gpu: GpuStats, used_mib: float, util_pct: float | None) -> None:
        u = "" if util_pct is None else f"{util_pct:g}"
        self._writer.writerow((now, elapsed_s, gpu.index, f"{used_mib:.1f}", f"{gpu.total_mib:.1f}", u))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def drop_torn_last_line(path: Path) -> None:
    """A crash can leave half a row at the end of the CSV; cut it so the next session's first row
    starts on its own line."""
    with path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
