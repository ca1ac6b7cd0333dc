"""How Ollama v0.33.0 is built: a Go binary that runs llama.cpp's own `llama-server`, from registries only.

Ollama >= v0.30 no longer compiles ggml into the Go binary (`source.build_binary` builds it without
cgo inference code): `llama/server/CMakeLists.txt` builds llama.cpp's `llama-server` (plus libllama,
libggml-base, the CPU backend) from a llama.cpp checkout that CMake fetches from GitHub at the tag in
`LLAMA_CPP_VERSION` (b10488 for v0.33.0). No machine here reaches GitHub, but
`-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP=<dir>` replaces the fetch, and Ollama's CMake then applies its own
patches (`llama/compat/**/*.patch`, `git apply`: git is needed) and links its compat sources into libllama
itself. The llama.cpp comes from PyPI: the sdist of llama-cpp-python 0.3.35 vendors llama.cpp 4df29be4f
(2026-08-16, the closest on PyPI to Ollama's pin; both of v0.33.0's patches apply to it unchanged). It is
not b10488 (the patches' pre-image blob ids differ): this is Ollama v0.33.0's Go code and patches on a
neighbouring llama.cpp, and whatever llama-server itself says (its error texts, its tokenizer) is
4df29be4f's.

Into `lib/ollama/`, where the binary looks (`<bindir>/../lib/ollama`, `v0.33.0:llm/llama_binary.go`):
`llama-server` and `llama-quantize` (not optional: `ollama create` copies every GGUF through
`llama-quantize COPY`, `v0.33.0:server/create.go:767`, `copyLayerWithLlamaQuantize`), their libraries,
and one CPU variant. Upstream's `cpu` preset (`GGML_CPU_ALL_VARIANTS=ON`) makes ggml depend on all 15 x86
variants (550 ninja steps against 329); here the single `libggml-cpu.so` is built with exactly the
variant's features (`cpu.cmake_switches`) and installed as `libggml-cpu-<variant>.so`, as upstream names
it. It carries the same load-time feature check (`GGML_BACKEND_DL`), so ggml picks among the variants
present as it would among all. A cache used on another CPU gets that CPU's variant built beside it
(`build_variant`: target `ggml-cpu` only, in a build tree of its own).

Measured on this 2-core machine (2026-12-07, `nice -n 19`, shared): the whole build 785 s at load
average 3-4; `ollama serve` answers /api/version in 0.1-0.25 s; `ollama create gemma3-270m` 1.7-3.4 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from chunkwise.errors import SetupError
from chunkwise.harness.llama_server.build import VENDOR, build_tools, cache_lock, extract_sources
from chunkwise.harness.llama_server.fetch import download_sdist
from chunkwise.harness.ollama_server.cpu import Variants, backend_name, cmake_switches, parse_variants
from chunkwise.harness.ollama_server.paths import OllamaPaths
from chunkwise.harness.ollama_server.source import writable_copy
from chunkwise.harness.ollama_server.toolchain import OllamaSetupError

#: The PyPI sdist whose vendor/llama.cpp is built (llama.cpp 4df29be4f), and its sha256.
LLAMA_SDIST_VERSION = "0.3.35"
LLAMA_SDIST_SHA256 = "1139dbb54509074b70893fab8554e3b079aa9f4d312058ce4018ef0019e3de12"
#: A CPU-only build of shared libraries, the CPU backend loaded at run time, no GPU toolchains even where an
#: `nvcc` is installed; OLLAMA_RUNNER_DIR empty selects the CPU/base install layout (llama/server/CMakeLists.txt).
BASE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DGGML_BACKEND_DL=ON", "-DGGML_NATIVE=OFF",
              "-DGGML_OPENMP=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF", "-DOLLAMA_RUNNER_DIR=",
              "-DCMAKE_CUDA_COMPILER=NOTFOUND", "-DCMAKE_HIP_COMPILER=NOTFOUND")


def sdist_path(paths: OllamaPaths) -> Path:
    return paths.downloads / f"llama_cpp_python-{LLAMA_SDIST_VERSION}.tar.gz"


def ensure_llama_sdist(paths: OllamaPaths, log: Callable[[str], None]) -> Path:
    """The pinned sdist (74.9 MB) through pip, sha256-checked, under a lock of its own."""
    with cache_lock(paths.downloads):
        try:
            return download_sdist(sdist_path(paths), LLAMA_SDIST_VERSION, LLAMA_SDIST_SHA256, log,
                                  paths.setup_command)
        except SetupError as exc:
            raise OllamaSetupError(str(exc)) from None


class LlamaServerRecipe:
    """v0.33.0. `engine_files`: what lib/ollama holds besides the CPU variant."""

    engine_files: tuple[str, ...] = ("llama-server", "llama-quantize", "libllama.so", "libggml-base.so", "libggml.so")

    def variants(self, module: Path, paths: OllamaPaths, log: Callable[[str], None]) -> Variants:
        """From the sdist's llama.cpp, read inside the archive (no extraction)."""
        with tarfile.open(ensure_llama_sdist(paths, log)) as tar:
            top = tar.getmembers()[0].name.split("/")[0]
            member = tar.extractfile(f"{top}/{VENDOR}/ggml/src/CMakeLists.txt")
            if member is None:
                raise OllamaSetupError(f"{sdist_path(paths)}: no {VENDOR}/ggml/src/CMakeLists.txt inside")
            return parse_variants(member.read().decode())

    def prepare(self, module: Path, paths: OllamaPaths, log: Callable[[str], None]) -> Path:
        """A writable copy of the module, and the sdist's llama.cpp beside it (`llama_source`)."""
        src = writable_copy(module, paths.build_dir / "src")
        llama = extract_sources(ensure_llama_sdist(paths, log), paths.build_dir / "llama.cpp")
        # A submodule link into the sdist's .git/modules: `git apply` inside it would fail, and Ollama's
        # apply-patch.cmake wants a plain tree.
        (llama / ".git").unlink(missing_ok=True)
        return src

    def llama_source(self, paths: OllamaPaths) -> Path:
        return paths.build_dir / "llama.cpp" / f"llama_cpp_python-{LLAMA_SDIST_VERSION}" / VENDOR

    def _cmake(self, src: Path, paths: OllamaPaths, build: Path, features: tuple[str, ...], targets: list[str],
               log: Path, jobs: int) -> None:
        if shutil.which("git") is None:
            raise OllamaSetupError("git not found: Ollama's CMake applies its llama.cpp patches with `git apply`; "
                                   f"install git and run `{paths.setup_command}` again")
        cmake, ninja = build_tools()
        with log.open("a") as out:
            for cmd in ([cmake, "-S", str(src / "llama" / "server"), "-B", str(build), "-G", "Ninja",
                         f"-DCMAKE_MAKE_PROGRAM={ninja}", *BASE_FLAGS, *cmake_switches(features),
                         f"-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP={self.llama_source(paths)}",
                         f"-DCMAKE_INSTALL_PREFIX={paths.version_dir}"],
                        [cmake, "--build", str(build), "--target", *targets, "-j", str(jobs)]):
                if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    raise OllamaSetupError(f"building Ollama's llama-server failed: see {log} (the first `error:` or "
                                           f"`llama/compat: failed to apply` names it); run `{paths.setup_command}` "
                                           "again")

    def build_engine(self, src: Path, paths: OllamaPaths, variant: str, features: tuple[str, ...], log: Path,
                     jobs: int) -> None:
        """llama-server and llama-quantize with this variant, installed into lib/ollama."""
        build = src / "build" / "llama-server-cpu"
        self._cmake(src, paths, build, features, ["llama-server", "llama-quantize"], log, jobs)
        cmake, _ = build_tools()
        with log.open("a") as out:
            if subprocess.run([cmake, "--install", str(build), "--component", "llama-server"], stdout=out,
                              stderr=subprocess.STDOUT).returncode != 0:
                raise OllamaSetupError(f"installing Ollama's llama-server failed: see {log}")
        os.replace(paths.lib_dir / "libggml-cpu.so", paths.lib_dir / backend_name(variant))

    def build_variant(self, src: Path, paths: OllamaPaths, variant: str, features: tuple[str, ...], log: Path,
                      jobs: int) -> None:
        """Only `libggml-cpu.so` with this variant's features, copied in as `libggml-cpu-<variant>.so`."""
        build = src / "build" / f"cpu-{variant}"
        self._cmake(src, paths, build, features, ["ggml-cpu"], log, jobs)
        partial = paths.lib_dir / f".{backend_name(variant)}.part"
        shutil.copy2(build / "bin" / "libggml-cpu.so", partial, follow_symlinks=True)
        os.replace(partial, paths.lib_dir / backend_name(variant))
