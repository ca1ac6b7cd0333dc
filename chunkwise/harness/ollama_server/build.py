"""Build Ollama v0.24.0 from its Go module, and the SIMD CPU backend this machine's CPU can run.

Two parts, both cached (`OllamaPaths`):

1. **The binary**: `go build` of the module's own source. The Go module proxy serves the module without its
   `vendor/` directories (Go's module zips leave them out), and cgo needs three of the single-header
   libraries that live there (`llama/llama.cpp/vendor/{nlohmann,stb,miniaudio}`). They are taken from the
   llama.cpp copy inside the pinned llama-cpp-python sdist that `make engine` already downloads (header-only
   libraries with stable interfaces). So the source is copied out of the read-only module cache, the headers
   are added, and the binary is built in that copy. About 5 minutes on 2 cores.
2. **The CPU backend**: with only cgo's generic C code, prompt processing is about 10x slower (no `-m`
   flags); Ollama's own CMake project builds `libggml-cpu-<variant>.so`, which the binary loads from
   `<bindir>/../lib/ollama`. Only the variant ggml would pick on this CPU is built (its
   `ggml_backend_cpu_x86_score`: every feature of the variant present, highest score wins), about 45 s; a
   cache used on another CPU builds that CPU's variant beside it. `-DCMAKE_CUDA_COMPILER=NOTFOUND`
   (and HIP): a machine with `nvcc` would otherwise build the CUDA backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from chunkwise.harness.llama_server.build import build_tools
from chunkwise.harness.llama_server.fetch import ensure_sdist
from chunkwise.harness.llama_server.paths import engine_paths
from chunkwise.harness.ollama_server.paths import LDFLAGS, MODULE, VERSION, OllamaPaths
from chunkwise.harness.ollama_server.toolchain import (
    GoEnv,
    OllamaSetupError,
    find_go,
    need_compilers,
    parse_go_version,
)

#: `llama/llama.cpp/vendor/<dir>` headers cgo includes (`#include <nlohmann/json.hpp>`, `stb/stb_image.h`,
#: `miniaudio/miniaudio.h`), taken from the sdist's `vendor/llama.cpp/vendor/<dir>`.
VENDORED = ("nlohmann", "stb", "miniaudio")
#: x86 variants of ggml's CPU backend and the features each needs (ggml/src/CMakeLists.txt
#: `ggml_add_cpu_backend_variant`); the score weights are `ggml_backend_cpu_x86_score`'s
#: (ggml-cpu/arch/x86/cpu-feats.cpp).
X86_VARIANTS: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("SSE42",),
    "sandybridge": ("SSE42", "AVX"),
    "haswell": ("SSE42", "AVX", "F16C", "AVX2", "BMI2", "FMA"),
    "skylakex": ("SSE42", "AVX", "F16C", "AVX2", "BMI2", "FMA", "AVX512"),
    "icelake": ("SSE42", "AVX", "F16C", "AVX2", "BMI2", "FMA", "AVX512", "AVX512_VBMI", "AVX512_VNNI"),
    "alderlake": ("SSE42", "AVX", "F16C", "AVX2", "BMI2", "FMA", "AVX_VNNI"),
}
SCORE = {"FMA": 1, "F16C": 2, "SSE42": 4, "BMI2": 8, "AVX": 16, "AVX2": 32, "AVX_VNNI": 64, "AVX512": 128,
         "AVX512_VBMI": 256, "AVX512_VNNI": 1024}
#: ggml feature -> the /proc/cpuinfo flags that mean it (AVX512 = F, CD, VL, DQ, BW, as the score checks).
CPU_FLAGS = {"FMA": ("fma",), "F16C": ("f16c",), "SSE42": ("sse4_2",), "BMI2": ("bmi2",), "AVX": ("avx",),
             "AVX2": ("avx2",), "AVX_VNNI": ("avx_vnni",),
             "AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
             "AVX512_VBMI": ("avx512vbmi",), "AVX512_VNNI": ("avx512_vnni",)}


def cpu_variant(flags: set[str]) -> str:
    """The x86 variant ggml would load on a CPU with these /proc/cpuinfo flags."""
    def ok(features: tuple[str, ...]) -> bool:
        return all(flag in flags for feature in features for flag in CPU_FLAGS[feature])

    usable = [name for name, features in X86_VARIANTS.items() if ok(features)]
    return max(usable, key=lambda name: 1 + sum(SCORE[f] for f in X86_VARIANTS[name]))


def this_cpu_variant() -> str:
    """`cpu_variant` of this machine (x64, the plain one, when /proc/cpuinfo cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "x64"
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return cpu_variant(set(line.partition(":")[2].split()))


def backend_lib(paths: OllamaPaths, variant: str) -> Path:
    return paths.lib_dir / f"libggml-cpu-{variant}.so"


def module_source(goenv: GoEnv, log: Path) -> Path:
    """Download the module through the proxy; returns its (read-only) directory in the module cache."""
    done = goenv.run(["mod", "download", "-json", f"{MODULE}@v{VERSION}"], log=log,
                     what=f"go mod download {MODULE}@v{VERSION}")
    info = json.loads(done.stdout)
    source = Path(info["Dir"])
    needed = parse_go_version(Path(info["GoMod"]).read_text().partition("\ngo ")[2].split("\n")[0])
    have = parse_go_version(subprocess.run([goenv.go, "version"], capture_output=True, text=True,
                                           env=goenv.env()).stdout)
    if needed and have and have < needed:
        raise OllamaSetupError(f"{MODULE}@v{VERSION} needs Go {'.'.join(map(str, needed))}, {goenv.go} is "
                               f"{'.'.join(map(str, have))}: install a newer Go and run `make ollama` again")
    return source


def writable_copy(source: Path, dest: Path) -> Path:
    """Copy the module out of the module cache (read-only there), adding the vendored headers."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest)
    for root, dirs, files in os.walk(dest):
        for name in (*dirs, *files):
            path = Path(root) / name
            path.chmod(path.stat().st_mode | 0o200)
    dest.chmod(dest.stat().st_mode | 0o200)
    vendor = dest / "llama" / "llama.cpp" / "vendor"
    sdist = ensure_sdist(engine_paths())
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
                               "`make engine` and `make ollama` again")
    return dest


def build_binary(goenv: GoEnv, src: Path, paths: OllamaPaths, log: Path, jobs: int) -> Path:
    """`go build` in the copied source; the binary replaces the cached one atomically."""
    paths.binary.parent.mkdir(parents=True, exist_ok=True)
    partial = paths.binary.with_name(".ollama.part")
    goenv.run(["build", "-p", str(jobs), "-trimpath", "-ldflags", LDFLAGS, "-o", str(partial), "."], cwd=src,
              log=log, what="go build of Ollama")
    os.replace(partial, paths.binary)
    return paths.binary


def build_cpu_backend(src: Path, paths: OllamaPaths, variant: str, log: Path, jobs: int) -> Path:
    """Configure Ollama's CMake project and build `ggml-cpu-<variant>` (with ggml-base) into lib/ollama."""
    cmake, ninja = build_tools()
    build = src / "build"
    with log.open("a") as out:
        for cmd in ([cmake, "-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                     "-DCMAKE_CUDA_COMPILER=NOTFOUND", "-DCMAKE_HIP_COMPILER=NOTFOUND"],
                    [cmake, "--build", str(build), "--target", f"ggml-cpu-{variant}", "-j", str(jobs)]):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise OllamaSetupError(f"building Ollama's CPU backend ({variant}) failed: see {log}; fix it and "
                                       "run `make ollama` again")
    paths.lib_dir.mkdir(parents=True, exist_ok=True)
    for lib in sorted((build / "lib" / "ollama").glob("libggml-*.so*")):
        partial = paths.lib_dir / f".{lib.name}.part"
        shutil.copy2(lib, partial, follow_symlinks=True)
        os.replace(partial, paths.lib_dir / lib.name)
    if not backend_lib(paths, variant).is_file():
        raise OllamaSetupError(f"the CMake build made no libggml-cpu-{variant}.so: see {log}")
    return backend_lib(paths, variant)


def binary_works(binary: Path) -> bool:
    """Whether `ollama --version` runs (a truncated copy or another libc fails)."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=30,
                              env={**os.environ, "OLLAMA_HOST": "127.0.0.1:1"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return VERSION.encode() in done.stdout + done.stderr


def ensure_built(paths: OllamaPaths, log: Callable[[str], None] = print, jobs: int | None = None) -> tuple[Path, Path]:
    """The cached binary and this CPU's backend, building what is missing; the caller holds the cache lock."""
    variant = this_cpu_variant()
    have_binary, have_lib = binary_works(paths.binary), backend_lib(paths, variant).is_file()
    if have_binary and have_lib:
        return paths.binary, backend_lib(paths, variant)
    need_compilers()
    go, version = find_go(paths)
    goenv = GoEnv(go, paths)
    jobs = jobs or os.cpu_count() or 2
    paths.build_dir.mkdir(parents=True, exist_ok=True)
    build_log = paths.build_dir / "build.log"
    log(f"ollama: building Ollama v{VERSION} with go{'.'.join(map(str, version))} ({go}) and {jobs} jobs: about "
        f"{'5' if not have_binary else '0'} + 1 minutes on 2 cores; log {build_log}")
    start = time.monotonic()
    src = writable_copy(module_source(goenv, build_log), paths.build_dir / "src")
    if not have_binary:
        build_binary(goenv, src, paths, build_log, jobs)
        log(f"ollama: binary built in {time.monotonic() - start:.0f} s -> {paths.binary}")
    if not have_lib:
        build_cpu_backend(src, paths, variant, build_log, jobs)
        log(f"ollama: CPU backend {variant} built -> {backend_lib(paths, variant)}")
    shutil.rmtree(paths.build_dir, ignore_errors=True)
    if not binary_works(paths.binary):
        raise OllamaSetupError(f"{paths.binary} was built but `ollama --version` does not report {VERSION}")
    return paths.binary, backend_lib(paths, variant)
