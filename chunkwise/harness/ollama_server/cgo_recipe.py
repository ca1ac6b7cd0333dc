"""How Ollama v0.24.0 is built: ggml and llama.cpp compiled into the Go binary by cgo, plus a SIMD CPU backend.

1. **The binary** (`source.build_binary`): the Go module proxy serves the module without its `vendor/`
   directories (Go's module zips leave them out), and cgo needs three of the single-header libraries that
   live there (`llama/llama.cpp/vendor/{nlohmann,stb,miniaudio}`). They are taken from the llama.cpp copy
   inside the pinned llama-cpp-python sdist that `make engine` already downloads (header-only libraries
   with stable interfaces). About 5 minutes on 2 cores.
2. **The CPU backend**: with only cgo's generic C code, prompt processing is about 10x slower (no `-m`
   flags); Ollama's own CMake project builds `libggml-cpu-<variant>.so` (and `libggml-base.so`), which the
   binary loads from `<bindir>/../lib/ollama`. Only the variant this CPU loads is built (`cpu.py`), about
   45 s. `-DCMAKE_CUDA_COMPILER=NOTFOUND` (and HIP): a machine with `nvcc` would otherwise build the CUDA
   backend. The variants are read from the module's own ggml (`ml/backend/ggml/ggml/src/CMakeLists.txt`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from chunkwise.harness.llama_server.build import build_tools
from chunkwise.harness.llama_server.fetch import ensure_sdist
from chunkwise.harness.llama_server.paths import engine_paths
from chunkwise.harness.ollama_server.cpu import Variants, backend_name, parse_variants
from chunkwise.harness.ollama_server.paths import OllamaPaths
from chunkwise.harness.ollama_server.source import writable_copy
from chunkwise.harness.ollama_server.toolchain import OllamaSetupError

#: `llama/llama.cpp/vendor/<dir>` headers cgo includes (`#include <nlohmann/json.hpp>`, `stb/stb_image.h`,
#: `miniaudio/miniaudio.h`), taken from the sdist's `vendor/llama.cpp/vendor/<dir>`.
VENDORED = ("nlohmann", "stb", "miniaudio")
#: ggml's CMake project inside the module.
GGML_CMAKE = Path("ml/backend/ggml/ggml/src/CMakeLists.txt")


class CgoRecipe:
    """v0.24.0. `engine_files`: what lib/ollama holds besides the CPU variant."""

    engine_files: tuple[str, ...] = ("libggml-base.so",)

    def variants(self, module: Path, paths: OllamaPaths, log: Callable[[str], None]) -> Variants:
        return parse_variants((module / GGML_CMAKE).read_text())

    def prepare(self, module: Path, paths: OllamaPaths, log: Callable[[str], None]) -> Path:
        """A writable copy of the module with the vendored headers added."""
        dest = writable_copy(module, paths.build_dir / "src")
        vendor = dest / "llama" / "llama.cpp" / "vendor"
        sdist = ensure_sdist(engine_paths(), log)
        with tarfile.open(sdist) as tar:
            top = tar.getmembers()[0].name.split("/")[0]
            prefix = f"{top}/vendor/llama.cpp/vendor/"
            for member in tar.getmembers():
                rel = member.name[len(prefix):] if member.name.startswith(prefix) else ""
                if rel.split("/")[0] in VENDORED and member.isfile():
                    target = vendor / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    extracted = tar.extractfile(member)
                    assert extracted is not None  # a regular file
                    target.write_bytes(extracted.read())
        missing = [name for name in VENDORED if not (vendor / name).is_dir()]
        if missing:
            raise OllamaSetupError(f"{sdist}: no vendor/llama.cpp/vendor/{missing[0]} inside; delete it and run "
                                   f"`make engine` and `{paths.setup_command}` again")
        return dest

    def build_engine(self, src: Path, paths: OllamaPaths, variant: str, features: tuple[str, ...], log: Path,
                     jobs: int) -> None:
        """lib/ollama's engine is ggml-base, built with the variant."""
        self.build_variant(src, paths, variant, features, log, jobs)

    def build_variant(self, src: Path, paths: OllamaPaths, variant: str, features: tuple[str, ...], log: Path,
                      jobs: int) -> None:
        """Configure Ollama's CMake project and build `ggml-cpu-<variant>` (with ggml-base) into lib/ollama."""
        cmake, ninja = build_tools()
        build = src / "build"
        with log.open("a") as out:
            for cmd in ([cmake, "-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                         "-DCMAKE_CUDA_COMPILER=NOTFOUND", "-DCMAKE_HIP_COMPILER=NOTFOUND"],
                        [cmake, "--build", str(build), "--target", f"ggml-cpu-{variant}", "-j", str(jobs)]):
                if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    raise OllamaSetupError(f"building Ollama's CPU backend ({variant}) failed: see {log}; fix it "
                                           f"and run `{paths.setup_command}` again")
        paths.lib_dir.mkdir(parents=True, exist_ok=True)
        for lib in sorted((build / "lib" / "ollama").glob("libggml-*.so*")):
            partial = paths.lib_dir / f".{lib.name}.part"
            shutil.copy2(lib, partial, follow_symlinks=True)
            os.replace(partial, paths.lib_dir / lib.name)
        if not (paths.lib_dir / backend_name(variant)).is_file():
            raise OllamaSetupError(f"the CMake build made no {backend_name(variant)}: see {log}")
