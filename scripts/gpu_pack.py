"""Pack what scripts/gpu_measure.sh needs on the GPU machine into .gpu/ (git-ignored; pass it as
`carry`): a trimmed copy of the llama.cpp vendored in the pinned sdist, as one .tar.gz.

The GPU machine has no network and a 64 MiB upload limit, so the 76.6 MB sdist cannot travel.
Kept (what `cmake --build --target llama-server` with GGML_CUDA=ON reads): the top-level
CMakeLists.txt, cmake/, licenses/, include/, src/, common/, vendor/, app/, ggml/ without the other
backends' sources (Vulkan, SYCL, OpenCL, Metal, Hexagon, CANN, WebGPU, OpenVINO, ...; each is only
added when its GGML_<BACKEND> option is on), tools/ without the web UI's tests (every tool's
CMakeLists.txt is read at configure time). Dropped: models/ (75 MB of vocab files), docs/, tests/,
examples/, benches/, gguf-py/, conversion scripts.

    .venv/bin/python scripts/gpu_pack.py      # prints the size; uses the cached sdist (make engine)
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chunkwise.harness.llama_server.fetch import ensure_sdist  # noqa: E402
from chunkwise.harness.llama_server.paths import engine_paths  # noqa: E402

KEEP_DIRS = ("cmake/", "licenses/", "include/", "src/", "common/", "vendor/", "ggml/", "tools/", "app/")
# scripts/ui-assets.cmake: tools/ui runs it at build time even with LLAMA_USE_PREBUILT_UI=OFF (seen failing on
# the H100).
KEEP_FILES = ("CMakeLists.txt", "LICENSE", "scripts/ui-assets.cmake")
DROP_BACKENDS = ("blas", "cann", "et", "hexagon", "hip", "kompute", "metal", "musa", "opencl", "openvino", "rpc",
                 "sycl", "virtgpu", "vulkan", "webgpu", "zdnn", "zendnn")
DROP_PREFIXES = ("tools/ui/tests/",)
OUT = ROOT / ".gpu" / "llama.cpp-src.tar.gz"


def wanted(rel: str) -> bool:
    """Whether a path relative to vendor/llama.cpp goes into the trimmed copy."""
    if rel in KEEP_FILES:
        return True
    if not rel.startswith(KEEP_DIRS) or rel.startswith(DROP_PREFIXES):
        return False
    return not any(rel.startswith(f"ggml/src/ggml-{backend}/") for backend in DROP_BACKENDS)


def main() -> None:
    sdist = ensure_sdist(engine_paths())
    OUT.parent.mkdir(exist_ok=True)
    kept = raw = 0
    with tarfile.open(sdist) as src, tarfile.open(OUT, "w:gz", compresslevel=9) as dst:
        for member in src.getmembers():
            parts = member.name.split("/vendor/llama.cpp/", 1)
            if len(parts) != 2 or not member.isfile() or not wanted(parts[1]):
                continue
            data = src.extractfile(member).read()
            info = tarfile.TarInfo("llama.cpp/" + parts[1])
            info.size, info.mode, info.mtime = len(data), member.mode, member.mtime
            dst.addfile(info, io.BytesIO(data))
            kept, raw = kept + 1, raw + len(data)
    print(f"{OUT}: {kept} files, {raw / 1e6:.1f} MB unpacked, {OUT.stat().st_size / 1e6:.1f} MB packed")


if __name__ == "__main__":
    main()
