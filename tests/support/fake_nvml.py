"""A scripted stand-in for pynvml, for tests of chunkwise.gpu.sampler and chunkwise.gpu.check.

Memory is in MiB on the test side and bytes on the NVML side, as pynvml reports it. Tests set
`used_mib[i]` (or pass `used_fn`) and read back what the code under test saw.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from chunkwise.units import MIB


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    NVMLError = FakeNVMLError

    def __init__(self, gpus=(("Fake H100 80GB HBM3", 81559.0),), used_mib=None, util=None, used_fn=None,
                 util_raises=False, fail_memory_after=None):
        self.names = [g[0] for g in gpus]
        self.total_mib = [g[1] for g in gpus]
        self.used_mib = list(used_mib if used_mib is not None else [500.0] * len(gpus))
        self.util = list(util if util is not None else [0.0] * len(gpus))
        self.used_fn = used_fn
        self.util_raises = util_raises
        self.fail_memory_after = fail_memory_after
        self.memory_calls = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.lock = threading.Lock()

    def nvmlInit(self):
        self.init_calls += 1

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self):
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, handle):
        return self.names[handle].encode()  # old pynvml versions return bytes

    def nvmlDeviceGetMemoryInfo(self, handle):
        with self.lock:
            self.memory_calls += 1
            if self.fail_memory_after is not None and self.memory_calls > self.fail_memory_after:
                raise FakeNVMLError("GPU is lost")
            used = self.used_fn(handle) if self.used_fn else self.used_mib[handle]
        total = self.total_mib[handle]
        return SimpleNamespace(total=int(total * MIB), used=int(used * MIB), free=int((total - used) * MIB))

    def nvmlDeviceGetUtilizationRates(self, handle):
        if self.util_raises:
            raise FakeNVMLError("Not Supported")
        return SimpleNamespace(gpu=self.util[handle], memory=0)
