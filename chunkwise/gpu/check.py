"""`make gpu-check` / `python -m chunkwise.gpu.check`: does the GPU sampler see real allocations?

For a machine with an NVIDIA GPU and no Ollama. It allocates known amounts of plain device memory
(1, 2, 4 and 8 GiB by default, one at a time, through `chunkwise.gpu.cuda_alloc`: torch, cupy, the
CUDA runtime or the driver API) and checks that the `GpuSampler` thread's NVML "used" reading rose
by the allocated MiB within 2 %. "Used" is summed over every GPU NVML sees, so a GPU index that
differs between CUDA and NVML cannot fool it; another process allocating at the same time can.

Exit codes: 0 every step within tolerance; 1 a step missed (or none could run); 2 no GPU, no
NVIDIA driver or no CUDA library to allocate with (the reason is printed). The whole check is
bounded by `--deadline-s` (150 s), so it ends in under 3 minutes.

Imports only the standard library and pynvml, so it runs from a bare checkout:
`PYTHONPATH=. python3 -m chunkwise.gpu.check` with pynvml.py importable.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.gpu.sampler import GpuSampler
from chunkwise.units import MIB

EXIT_PASS, EXIT_MISS, EXIT_NO_GPU = 0, 1, 2
#: Free memory a step leaves untouched (MiB): the driver and other processes need some.
FREE_RESERVE_MIB = 1024.0
WARMUP_BYTES = 2 * MIB


@dataclass
class Step:
    size_mib: float
    before_mib: float | None = None
    after_mib: float | None = None
    result: str = "skipped"  # ok | MISS | skipped | error
    note: str = ""

    @property
    def delta_mib(self) -> float | None:
        return None if self.before_mib is None or self.after_mib is None else self.after_mib - self.before_mib

    @property
    def error(self) -> float | None:
        delta = self.delta_mib
        return None if delta is None else (delta - self.size_mib) / self.size_mib


@dataclass
class CheckResult:
    allocator: str
    tolerance: float
    steps: list[Step] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ran(self) -> list[Step]:
        return [s for s in self.steps if s.result in ("ok", "MISS", "error")]

    @property
    def passed(self) -> bool:
        return bool(self.ran) and all(s.result == "ok" for s in self.ran)


def settled_reading(sampler: GpuSampler, timeout_s: float, agree_mib: float = 2.0) -> float | None:
    """Summed used MiB once two consecutive fresh sampler readings agree within `agree_mib`."""
    deadline = time.monotonic() + timeout_s
    previous = None
    while time.monotonic() < deadline:
        count = sampler.sample_count
        if not sampler.wait_for_samples(count + 1, max(0.0, deadline - time.monotonic())):
            break
        current = sampler.latest_used_mib()
        if previous is not None and current is not None and abs(current - previous) <= agree_mib:
            return current
        previous = current
    return previous


def run_check(
    sampler: GpuSampler,
    allocator: Any,
    steps_mib: Sequence[float] = (1024, 2048, 4096, 8192),
    *,
    tolerance: float = 0.02,
    total_mib: float | None = None,
    settle_timeout_s: float = 10.0,
    deadline_s: float = 150.0,
) -> CheckResult:
    """Allocate each size, read the sampler before and after, free it; `sampler` must be running."""
    started = time.monotonic()
    result = CheckResult(getattr(allocator, "name", "?"), tolerance)
    # Warm-up: the first allocation and memset may load CUDA modules (lazy loading) and grow the
    # context's own memory; that must land before the first "before" reading, not inside a step.
    try:
        allocator.free(allocator.alloc(WARMUP_BYTES))
    except Exception as exc:  # noqa: BLE001
        result.steps.append(Step(WARMUP_BYTES / MIB, result="error", note=f"warm-up allocation failed: {exc}"))
        return result
    for size in steps_mib:
        step = Step(float(size))
        result.steps.append(step)
        if time.monotonic() - started > deadline_s:
            step.note = f"out of time (deadline {deadline_s:.0f} s)"
            continue
        step.before_mib = settled_reading(sampler, settle_timeout_s)
        if step.before_mib is None:
            step.result, step.note = "error", f"no sampler reading ({sampler.reason})"
            continue
        if total_mib is not None and total_mib - step.before_mib < size + FREE_RESERVE_MIB:
            step.before_mib = None
            step.note = f"not enough free GPU memory for {size:.0f} MiB + {FREE_RESERVE_MIB:.0f} MiB reserve"
            continue
        try:
            token = allocator.alloc(int(size * MIB))
        except Exception as exc:  # noqa: BLE001 - report and go on with the next size
            step.result, step.note = "error", f"allocation failed: {exc}"
            continue
        try:
            step.after_mib = settled_reading(sampler, settle_timeout_s)
        finally:
            allocator.free(token)
        if step.error is None:
            step.result, step.note = "error", f"no sampler reading after the allocation ({sampler.reason})"
        else:
            step.result = "ok" if abs(step.error) <= tolerance else "MISS"
    result.elapsed_s = time.monotonic() - started
    return result


def format_table(result: CheckResult) -> str:
    def num(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    lines = ["| step | allocated MiB | NVML used before MiB | after MiB | delta MiB | error | result | note |",
             "|---|---|---|---|---|---|---|---|"]
    for i, s in enumerate(result.steps, 1):
        err = "" if s.error is None else f"{s.error:+.2%}"
        lines.append(f"| {i} | {s.size_mib:.0f} | {num(s.before_mib)} | {num(s.after_mib)} | {num(s.delta_mib)} "
                     f"| {err} | {s.result} | {s.note} |")
    return "\n".join(lines)


def _parse_steps(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise SystemExit(f"gpu-check: --steps-gib {text!r}: write positive GiB sizes, e.g. 1,2,4,8")
    return [v * 1024 for v in values]


def main(argv: list[str] | None = None, *, nvml: Any = None,
         allocator_factory: Callable[[str, int], tuple[Any | None, list[str]]] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chunkwise.gpu.check", description=__doc__.splitlines()[0])
    parser.add_argument("--steps-gib", default="1,2,4,8", help="sizes to allocate, GiB (default: %(default)s)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="allowed relative miss (default: 0.02)")
    parser.add_argument("--interval-s", type=float, default=0.1, help="sampler period, seconds (default: 0.1)")
    parser.add_argument("--allocator", choices=("auto", "torch", "cupy", "cudart", "driver"), default="auto")
    parser.add_argument("--device", type=int, default=0, help="CUDA device to allocate on (default: 0)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write gpu_samples.csv and gpu_check.md here (default: print only)")
    parser.add_argument("--deadline-s", type=float, default=150.0, help="stop starting steps after this long")
    args = parser.parse_args(argv)
    steps = _parse_steps(args.steps_gib)

    sampler = GpuSampler(args.output_dir, args.interval_s, nvml=nvml)
    sampler.start()
    if not sampler.available:
        sampler.stop()
        print(f"gpu-check: no GPU to check: NVML unavailable ({sampler.reason})")
        return EXIT_NO_GPU
    try:
        if allocator_factory is None:
            from chunkwise.gpu.cuda_alloc import find_allocator

            allocator_factory = find_allocator
        allocator, reasons = allocator_factory(args.allocator, args.device)
        if allocator is None:
            print(f"gpu-check: no CUDA library to allocate with: {'; '.join(reasons)}")
            return EXIT_NO_GPU
        try:
            gpus = sampler.read_now()
            total = gpus["total_mib"] if gpus else None
            print(f"gpu-check: allocating with {allocator.name} ({getattr(allocator, 'detail', '')}); "
                  f"NVML total {total:.0f} MiB over all GPUs; tolerance {args.tolerance:.0%}")
            result = run_check(sampler, allocator, steps, tolerance=args.tolerance, total_mib=total,
                               deadline_s=args.deadline_s)
        finally:
            allocator.close()
    finally:
        summary = sampler.stop()
    table = format_table(result)
    verdict = "PASS" if result.passed else "FAIL"
    tail = (f"gpu-check: {verdict}: {sum(s.result == 'ok' for s in result.steps)} of {len(result.steps)} steps "
            f"within {args.tolerance:.0%}, {result.elapsed_s:.1f} s, {summary['samples']} sampler readings")
    print(table)
    print(tail)
    if args.output_dir is not None:
        (args.output_dir / "gpu_check.md").write_text(f"{table}\n\n{tail}\n", encoding="utf-8")
    return EXIT_PASS if result.passed else EXIT_MISS


if __name__ == "__main__":
    sys.exit(main())
