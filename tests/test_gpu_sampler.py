"""GpuSampler and free_vram_mib: the real no-NVML path, NVML made unavailable, scripted readings."""

from __future__ import annotations

import csv
import threading

import pynvml
import pytest

from chunkwise.gpu.nvml import free_vram_mib
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.gpu.series import CSV_FIELDS
from tests.support.fake_nvml import FakeNvml

NEVER = 3600.0  # an interval the thread never reaches in a test: readings come only from the test


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_real_nvml_state_is_reported_without_crashing(tmp_path):
    """Here there is no NVIDIA driver: the sampler must say so with NVML's own text."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        expected_reason = str(exc)
    else:  # a machine with a GPU: the sampler must then work
        pynvml.nvmlShutdown()
        expected_reason = None
    sampler = GpuSampler(tmp_path, interval_s=NEVER)
    sampler.start()
    summary = sampler.stop()
    if expected_reason is None:
        assert summary["available"] is True and summary["gpus"]
    else:
        assert summary == {
            "available": False,
            "reason": expected_reason,
            "status": f"unavailable: {expected_reason}",
            "interval_s": NEVER,
            "samples": 0,
            "gpus": [],
            "csv": None,
        }
        assert not (tmp_path / "gpu_samples.csv").exists()
        assert free_vram_mib() == (None, expected_reason)


def test_library_not_found_through_the_seam(tmp_path, monkeypatch):
    def boom():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", boom)
    with GpuSampler(tmp_path, interval_s=0.5) as sampler:
        assert sampler.available is False
        assert sampler.read_now() is None
        assert sampler.wait_for_samples(1, timeout_s=0.01) is False
    summary = sampler.stop()
    assert summary["available"] is False
    assert summary["reason"] == "NVML Shared Library Not Found"
    assert summary["status"] == "unavailable: NVML Shared Library Not Found"
    assert free_vram_mib() == (None, "NVML Shared Library Not Found")


def test_driver_not_loaded_text_is_kept(monkeypatch):
    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    sampler = GpuSampler(None)
    sampler.start()
    assert sampler.stop()["reason"] == "Driver Not Loaded"


def test_scripted_readings_give_baseline_peak_mean_and_csv(tmp_path):
    fake = FakeNvml(gpus=(("GPU A", 81559.0), ("GPU B", 40960.0)), used_mib=[1000.0, 200.0], util=[0.0, 0.0])
    sampler = GpuSampler(tmp_path, interval_s=NEVER, nvml=fake)
    sampler.start()  # baseline: 1000 / 200
    for used_a, used_b, util_a in ((5000.0, 300.0, 50.0), (9000.0, 300.0, 100.0), (7000.0, 600.0, 30.0)):
        fake.used_mib = [used_a, used_b]
        fake.util = [util_a, 10.0]
        total = sampler.read_now()
        assert total == {"used_mib": used_a + used_b, "total_mib": 81559.0 + 40960.0}
    fake.used_mib = [3000.0, 300.0]
    fake.util = [20.0, 10.0]
    summary = sampler.stop()  # the final reading: 3000 / 300
    assert summary["available"] is True and summary["reason"] is None and summary["status"] == "ok"
    assert summary["samples"] == 5
    a, b = summary["gpus"]
    assert a == {
        "index": 0, "name": "GPU A", "total_mib": 81559.0, "baseline_used_mib": 1000.0,
        "peak_used_mib": 9000.0, "mean_used_mib": 6000.0, "peak_util_pct": 100.0, "mean_util_pct": 50.0,
    }
    assert (b["baseline_used_mib"], b["peak_used_mib"], b["mean_used_mib"]) == (200.0, 600.0, 375.0)
    rows = _rows(tmp_path / "gpu_samples.csv")
    assert list(rows[0].keys()) == list(CSV_FIELDS)
    assert len(rows) == 5 * 2
    assert [float(r["used_mib"]) for r in rows if r["gpu"] == "0"] == [1000.0, 5000.0, 9000.0, 7000.0, 3000.0]
    assert summary["csv"] == str(tmp_path / "gpu_samples.csv")
    assert fake.init_calls == 1 and fake.shutdown_calls == 1


def test_csv_is_flushed_while_running(tmp_path):
    fake = FakeNvml(used_mib=[1234.0])
    sampler = GpuSampler(tmp_path, interval_s=NEVER, nvml=fake)
    sampler.start()
    sampler.read_now()
    # Not stopped yet: what a crash at this point would leave on disk.
    rows = _rows(tmp_path / "gpu_samples.csv")
    assert [float(r["used_mib"]) for r in rows] == [1234.0, 1234.0]
    sampler.stop()


def test_thread_samples_and_stop_is_idempotent(tmp_path):
    fake = FakeNvml(used_mib=[700.0])
    sampler = GpuSampler(tmp_path, interval_s=0.005, nvml=fake)
    sampler.start()
    assert sampler.wait_for_samples(6, timeout_s=30) is True
    thread = sampler._thread
    first = sampler.stop()
    assert not thread.is_alive()
    assert not any(t.name == "chunkwise-gpu-sampler" for t in threading.enumerate())
    assert first["samples"] >= 7  # baseline, >= 5 thread readings, the final one
    second = sampler.stop()
    assert second == first
    assert fake.shutdown_calls == 1
    assert len(_rows(tmp_path / "gpu_samples.csv")) == first["samples"]
    assert sampler.read_now() is None
    with pytest.raises(RuntimeError):
        sampler.start()


def test_window_peak_and_latest(tmp_path):
    fake = FakeNvml(gpus=(("A", 1000.0), ("B", 1000.0)), used_mib=[100.0, 100.0])
    sampler = GpuSampler(None, interval_s=NEVER, nvml=fake)
    sampler.start()
    fake.used_mib = [400.0, 100.0]
    sampler.read_now()
    sampler.begin_window()
    assert sampler.window_peak_mib() is None
    fake.used_mib = [300.0, 50.0]
    sampler.read_now()
    fake.used_mib = [200.0, 50.0]
    sampler.read_now()
    assert sampler.window_peak_mib() == 350.0
    assert sampler.latest_used_mib() == 250.0
    summary = sampler.stop()
    assert summary["csv"] is None and summary["samples"] == 5


def test_utilisation_not_supported_keeps_memory(tmp_path):
    fake = FakeNvml(used_mib=[800.0], util_raises=True)
    with GpuSampler(tmp_path, interval_s=NEVER, nvml=fake) as sampler:
        sampler.read_now()
    gpu = sampler.stop()["gpus"][0]
    assert gpu["peak_used_mib"] == 800.0 and gpu["peak_util_pct"] is None and gpu["mean_util_pct"] is None
    assert _rows(tmp_path / "gpu_samples.csv")[1]["util_pct"] == ""


def test_gpu_lost_mid_run_keeps_what_was_sampled(tmp_path):
    # Memory info calls: 1 for the GPU list, 1 baseline, 1 read_now; the 4th (thread) fails.
    fake = FakeNvml(used_mib=[900.0], fail_memory_after=3)
    sampler = GpuSampler(tmp_path, interval_s=0.005, nvml=fake)
    sampler.start()
    sampler.read_now()
    sampler.wait_for_samples(10, timeout_s=30)  # returns once the thread has failed
    summary = sampler.stop()
    assert summary["available"] is True
    assert summary["reason"] == "sampling stopped after 2 readings: GPU is lost"
    assert summary["status"].startswith("partial: ")
    assert summary["samples"] == 2
    assert summary["gpus"][0]["peak_used_mib"] == 900.0


def test_no_gpu_visible(tmp_path):
    sampler = GpuSampler(tmp_path, nvml=FakeNvml(gpus=()))
    sampler.start()
    summary = sampler.stop()
    assert summary["available"] is False and summary["reason"] == "NVML works but sees no GPU"
    assert free_vram_mib(FakeNvml(gpus=())) == (None, "NVML works but sees no GPU")


def test_free_vram_sums_gpus():
    fake = FakeNvml(gpus=(("A", 1000.0), ("B", 2000.0)), used_mib=[250.0, 500.0])
    assert free_vram_mib(fake) == (2250.0, None)
    assert fake.shutdown_calls == 1


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="interval"):
        GpuSampler(None, interval_s=0)


def test_stop_without_start():
    summary = GpuSampler(None).stop()
    assert summary["available"] is False and summary["reason"] == "the sampler was never started"


def test_torn_last_csv_row_from_a_crash_is_cut_before_appending(tmp_path):
    from chunkwise.gpu.series import drop_torn_last_line

    path = tmp_path / "gpu_samples.csv"
    path.write_bytes(b"time_utc,elapsed_s\n2026,1.0\n2026,2.")
    drop_torn_last_line(path)
    assert path.read_bytes() == b"time_utc,elapsed_s\n2026,1.0\n"
    drop_torn_last_line(path)  # a whole file is left alone
    assert path.read_bytes() == b"time_utc,elapsed_s\n2026,1.0\n"
