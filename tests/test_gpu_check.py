"""gpu_check: the check logic with a fake allocator and fake NVML, and the real no-GPU exit 2."""

from __future__ import annotations

import subprocess
import sys

import pynvml
import pytest

from chunkwise.gpu.check import EXIT_MISS, EXIT_NO_GPU, EXIT_PASS, main
from chunkwise.gpu.cuda_alloc import ORDER, find_allocator
from chunkwise.units import MIB
from tests.support.fake_nvml import FakeNvml

FAST = ["--interval-s", "0.002"]


class FakeGpu:
    """NVML's view of one GPU whose memory a FakeAllocator changes."""

    def __init__(self, used=800.0, total=81559.0):
        self.used = used
        self.nvml = FakeNvml(gpus=(("Fake H100", total),), used_fn=lambda _h: self.used)


class FakeAllocator:
    name = "fake"
    detail = "scripted"

    def __init__(self, gpu, seen_fraction=1.0, fail_at_mib=None):
        self.gpu, self.seen_fraction, self.fail_at_mib = gpu, seen_fraction, fail_at_mib
        self.live, self.closed, self.sizes = {}, False, []

    def alloc(self, nbytes):
        mib = nbytes / MIB
        if mib == self.fail_at_mib:
            raise RuntimeError("cudaMalloc(8589934592) failed: error 2 (out of memory)")
        self.sizes.append(mib)
        token = len(self.sizes)
        self.live[token] = mib * self.seen_fraction
        self.gpu.used += self.live[token]
        return token

    def free(self, token):
        self.gpu.used -= self.live.pop(token)

    def close(self):
        self.closed = True


def run(argv, gpu, allocator=None, reasons=()):
    return main(argv + FAST, nvml=gpu.nvml, allocator_factory=lambda pref, dev: (allocator, list(reasons)))


def test_pass(capsys, tmp_path):
    gpu = FakeGpu()
    allocator = FakeAllocator(gpu)
    assert run(["--output-dir", str(tmp_path)], gpu, allocator) == EXIT_PASS
    out = capsys.readouterr().out
    assert "allocating with fake (scripted); NVML total 81559 MiB" in out
    assert "| 4 | 8192 | 800.0 | 8992.0 | 8192.0 | +0.00% | ok |  |" in out
    assert "gpu-check: PASS: 4 of 4 steps within 2%" in out
    assert allocator.sizes == [2, 1024, 2048, 4096, 8192] and not allocator.live and allocator.closed
    assert gpu.used == 800.0
    assert "PASS" in (tmp_path / "gpu_check.md").read_text()
    assert (tmp_path / "gpu_samples.csv").stat().st_size > 0


def test_miss_when_nvml_sees_less(capsys):
    gpu = FakeGpu()
    assert run(["--steps-gib", "1,2"], gpu, FakeAllocator(gpu, seen_fraction=0.95)) == EXIT_MISS
    out = capsys.readouterr().out
    assert "| 1 | 1024 | 800.0 | 1772.8 | 972.8 | -5.00% | MISS |" in out
    assert "gpu-check: FAIL: 0 of 2 steps" in out


def test_within_tolerance_passes_and_tolerance_is_configurable(capsys):
    gpu = FakeGpu()
    assert run(["--steps-gib", "1"], gpu, FakeAllocator(gpu, seen_fraction=1.015)) == EXIT_PASS
    assert run(["--steps-gib", "1", "--tolerance", "0.01"], gpu, FakeAllocator(gpu, seen_fraction=1.015)) == EXIT_MISS


def test_uncommitted_memory_is_a_miss(capsys):
    """What managed memory or a lazy allocator would look like: NVML sees nothing."""
    gpu = FakeGpu()
    assert run(["--steps-gib", "1"], gpu, FakeAllocator(gpu, seen_fraction=0.0)) == EXIT_MISS
    assert "-100.00% | MISS" in capsys.readouterr().out


def test_allocation_error_is_a_miss_and_frees_nothing_twice(capsys):
    gpu = FakeGpu()
    allocator = FakeAllocator(gpu, fail_at_mib=8192)
    assert run([], gpu, allocator) == EXIT_MISS
    out = capsys.readouterr().out
    assert "| error | allocation failed: cudaMalloc(8589934592) failed" in out
    assert "3 of 4 steps" in out and gpu.used == 800.0


def test_warmup_failure_is_a_miss(capsys):
    gpu = FakeGpu()
    assert run([], gpu, FakeAllocator(gpu, fail_at_mib=2)) == EXIT_MISS
    assert "warm-up allocation failed: cudaMalloc" in capsys.readouterr().out


def test_steps_that_do_not_fit_are_skipped(capsys):
    gpu = FakeGpu(used=800.0, total=4096.0)
    allocator = FakeAllocator(gpu)
    assert run([], gpu, allocator) == EXIT_PASS
    assert allocator.sizes == [2, 1024, 2048]  # 2 MiB: the warm-up
    assert capsys.readouterr().out.count("not enough free GPU memory") == 2


def test_deadline_stops_new_steps(capsys):
    gpu = FakeGpu()
    assert run(["--deadline-s", "0"], gpu, FakeAllocator(gpu)) == EXIT_MISS
    assert "out of time" in capsys.readouterr().out


def test_no_cuda_library_is_exit_2(capsys):
    gpu = FakeGpu()
    reasons = ["torch: torch is not installed", "driver: no libcuda.so.1 found"]
    assert run([], gpu, None, reasons) == EXIT_NO_GPU
    assert capsys.readouterr().out == (
        "gpu-check: no CUDA library to allocate with: torch: torch is not installed; driver: no libcuda.so.1 found\n")


def test_nvml_unavailable_through_the_seam_is_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: (_ for _ in ()).throw(
        pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)))
    assert main([]) == EXIT_NO_GPU
    assert capsys.readouterr().out == "gpu-check: no GPU to check: NVML unavailable (Driver Not Loaded)\n"


def nvml_reason() -> str | None:
    """None when NVML reaches a driver (a GPU machine), else NVML's own reason."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return str(exc)
    pynvml.nvmlShutdown()
    return None


def test_real_machine_exit_code():
    """On a GPU machine the check must PASS (0); without a driver it exits 2 with NVML's reason."""
    reason = nvml_reason()
    proc = subprocess.run([sys.executable, "-m", "chunkwise.gpu.check", "--steps-gib", "0.25"],
                          capture_output=True, text=True, timeout=120)
    if reason is None:
        assert proc.returncode == EXIT_PASS, proc.stdout + proc.stderr
        assert "gpu-check: PASS: 1 of 1 steps within 2%" in proc.stdout
    else:
        assert proc.returncode == EXIT_NO_GPU, proc.stderr
        assert proc.stdout == f"gpu-check: no GPU to check: NVML unavailable ({reason})\n"


def test_real_allocator_search_reports_every_backend():
    """Every backend tried before the one found (all of them when none is) says why it could not allocate,
    and a backend found really allocates and frees device memory."""
    allocator, reasons = find_allocator()
    tried = [r.split(":")[0] for r in reasons]
    assert all(r.split(": ", 1)[1] for r in reasons)  # each with a reason
    if allocator is None:
        assert tried == list(ORDER)
        assert nvml_reason() is not None, f"a GPU machine where no CUDA library can allocate: {reasons}"
        return
    try:
        assert tried == list(ORDER[: ORDER.index(allocator.name)])
        token = allocator.alloc(MIB)
        allocator.free(token)
    finally:
        allocator.close()


def test_bad_steps_argument():
    gpu = FakeGpu()
    with pytest.raises(SystemExit, match="--steps-gib '1,x'"):
        run(["--steps-gib", "1,x"], gpu, FakeAllocator(gpu))
