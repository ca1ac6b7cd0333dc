"""Plain device-memory allocations through whichever CUDA library is present (for `gpu_check`).

Tried in order: torch, cupy, the CUDA runtime (`libcudart.so*` via ctypes, `cudaMalloc`), then the
CUDA driver API (`libcuda.so.1`, `cuMemAlloc`), which every NVIDIA driver installs, so the check
runs on a GPU machine with no CUDA toolkit and no torch. Every allocation is ordinary device memory
(never managed/unified memory, which NVML would not count until touched) and is written once
(memset) and synchronised before `alloc` returns, so the driver has committed it.

Nothing is imported at module import time; a missing library is an `AllocatorUnavailable` whose
text says what was missing.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
from typing import Any

ORDER = ("torch", "cupy", "cudart", "driver")


class AllocatorUnavailable(Exception):
    """This CUDA library is absent or cannot reach a GPU; the message says which and why."""


class _Registry:
    """Handles for live allocations, so `free` gets a small token, not the object."""

    def __init__(self) -> None:
        self._live: dict[int, Any] = {}
        self._next = 0

    def add(self, obj: Any) -> int:
        self._next += 1
        self._live[self._next] = obj
        return self._next

    def pop(self, token: int) -> Any:
        return self._live.pop(token)

    def drain(self) -> list[Any]:
        items, self._live = list(self._live.values()), {}
        return items


class TorchAllocator:
    name = "torch"

    def __init__(self, device: int = 0) -> None:
        if importlib.util.find_spec("torch") is None:
            raise AllocatorUnavailable("torch is not installed")
        import torch

        if not torch.cuda.is_available():
            raise AllocatorUnavailable(f"torch {torch.__version__} is installed but sees no CUDA device")
        self.torch, self.device = torch, torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        torch.zeros(1, device=self.device)  # create the CUDA context before any measurement
        torch.cuda.synchronize()
        self.detail = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
        self._live = _Registry()

    def alloc(self, nbytes: int) -> int:
        tensor = self.torch.empty(nbytes, dtype=self.torch.uint8, device=self.device)
        tensor.fill_(1)
        self.torch.cuda.synchronize()
        return self._live.add(tensor)

    def free(self, token: int) -> None:
        self._live.pop(token)  # the tensor's last reference goes here
        self.torch.cuda.synchronize()
        self.torch.cuda.empty_cache()  # hand the block back to the driver, or NVML keeps counting it

    def close(self) -> None:
        self._live.drain()
        self.torch.cuda.empty_cache()


class CupyAllocator:
    name = "cupy"

    def __init__(self, device: int = 0) -> None:
        if importlib.util.find_spec("cupy") is None:
            raise AllocatorUnavailable("cupy is not installed")
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise AllocatorUnavailable("cupy sees no CUDA device")
            cupy.cuda.Device(device).use()
            cupy.cuda.runtime.free(cupy.cuda.runtime.malloc(1))  # create the context
        except AllocatorUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - CUDARuntimeError and friends
            raise AllocatorUnavailable(f"cupy cannot use the GPU: {exc}") from None
        self.cupy = cupy
        self.detail = f"cupy {cupy.__version__}"
        self._live = _Registry()

    def alloc(self, nbytes: int) -> int:
        memory = self.cupy.cuda.Memory(nbytes)  # a direct cudaMalloc, not the memory pool
        self.cupy.cuda.runtime.memset(memory.ptr, 1, nbytes)
        self.cupy.cuda.runtime.deviceSynchronize()
        return self._live.add(memory)

    def free(self, token: int) -> None:
        self._live.pop(token)  # cudaFree when the last reference goes
        self.cupy.cuda.runtime.deviceSynchronize()

    def close(self) -> None:
        self._live.drain()


def cudart_candidates() -> list[str]:
    """Where libcudart may be: the loader path, CUDA_HOME/CUDA_PATH, /usr/local/cuda*, pip wheels."""
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    found = [p for r in roots if r for p in sorted(glob.glob(os.path.join(r, "lib*", "libcudart.so*")))]
    found += sorted(glob.glob("/usr/local/cuda-*/lib*/libcudart.so*"))
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        found += sorted(glob.glob(os.path.join(base, "cuda_runtime", "lib", "libcudart.so*")))
    return names + found


def _load(candidates: list[str]) -> tuple[ctypes.CDLL, str] | None:
    for name in candidates:
        try:
            return ctypes.CDLL(name), name
        except OSError:
            continue
    return None


class CudartAllocator:
    name = "cudart"

    def __init__(self, device: int = 0) -> None:
        loaded = _load(cudart_candidates())
        if loaded is None:
            raise AllocatorUnavailable("no libcudart.so* found (CUDA runtime library)")
        lib, self.path = loaded
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaMemset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        self.lib = lib
        try:
            self._check(lib.cudaSetDevice(ctypes.c_int(device)), "cudaSetDevice")
            self._check(lib.cudaFree(None), "cudaFree(0) (context creation)")
        except RuntimeError as exc:
            raise AllocatorUnavailable(f"{self.path}: {exc}") from None
        self.detail = self.path
        self._live = _Registry()

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            text = self.lib.cudaGetErrorString(code)
            raise RuntimeError(f"{what} failed: error {code} ({text.decode() if text else '?'})")

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), f"cudaMalloc({nbytes})")
        self._check(self.lib.cudaMemset(ptr, 1, ctypes.c_size_t(nbytes)), "cudaMemset")
        self._check(self.lib.cudaDeviceSynchronize(), "cudaDeviceSynchronize")
        return self._live.add(ptr)

    def free(self, token: int) -> None:
        self._check(self.lib.cudaFree(self._live.pop(token)), "cudaFree")

    def close(self) -> None:
        for ptr in self._live.drain():
            self.lib.cudaFree(ptr)


class DriverAllocator:
    name = "driver"

    def __init__(self, device: int = 0) -> None:
        loaded = _load(["libcuda.so.1", "libcuda.so"])
        if loaded is None:
            raise AllocatorUnavailable("no libcuda.so.1 (the NVIDIA driver's CUDA library) found")
        lib, self.path = loaded
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        lib.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
        lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        self.lib = lib
        self.dev = ctypes.c_int()
        self.ctx = ctypes.c_void_p()
        try:
            self._check(lib.cuInit(0), "cuInit")
            self._check(lib.cuDeviceGet(ctypes.byref(self.dev), device), "cuDeviceGet")
            self._check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), self.dev), "cuDevicePrimaryCtxRetain")
            self._check(lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")
        except RuntimeError as exc:
            raise AllocatorUnavailable(f"{self.path}: {exc}") from None
        self.detail = self.path
        self._live = _Registry()

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            text = ctypes.c_char_p()
            self.lib.cuGetErrorString(code, ctypes.byref(text))
            raise RuntimeError(f"{what} failed: CUresult {code} ({text.value.decode() if text.value else '?'})")

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self._check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), f"cuMemAlloc({nbytes})")
        self._check(self.lib.cuMemsetD8_v2(ptr, 1, ctypes.c_size_t(nbytes)), "cuMemsetD8")
        self._check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")
        return self._live.add(ptr)

    def free(self, token: int) -> None:
        self._check(self.lib.cuMemFree_v2(self._live.pop(token)), "cuMemFree")

    def close(self) -> None:
        for ptr in self._live.drain():
            self.lib.cuMemFree_v2(ptr)
        self.lib.cuDevicePrimaryCtxRelease(self.dev)


BACKENDS = {"torch": TorchAllocator, "cupy": CupyAllocator, "cudart": CudartAllocator, "driver": DriverAllocator}


def find_allocator(preferred: str = "auto", device: int = 0) -> tuple[Any | None, list[str]]:
    """The first backend that can allocate on `device` (or only `preferred`), and why others failed."""
    names = ORDER if preferred == "auto" else (preferred,)
    reasons: list[str] = []
    for name in names:
        try:
            return BACKENDS[name](device), reasons
        except AllocatorUnavailable as exc:
            reasons.append(f"{name}: {exc}")
    return None, reasons
