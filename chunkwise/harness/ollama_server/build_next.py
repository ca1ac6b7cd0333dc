"""DRAFT (not wired in): build Ollama v0.33.0, whose inference runs in llama.cpp's llama-server, from registries.

Ollama >= v0.30 no longer compiles ggml into the Go binary: `llama/server/CMakeLists.txt` builds llama.cpp's
own `llama-server` (plus libllama, libggml-base, the CPU backend) from a llama.cpp checkout that CMake
fetches from GitHub at the tag in `LLAMA_CPP_VERSION` (b10488 for v0.32.15 and v0.33.0). No machine here
reaches GitHub, but `-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP=<dir>` replaces the fetch, and Ollama's CMake then
applies its own patches (`llama/compat/**/*.patch`, `git apply`) and links its compat sources into the
libllama and mtmd targets itself. The llama.cpp source comes from PyPI: the sdist of llama-cpp-python 0.3.35
vendors llama.cpp 4df29be4f (2026-08-16, the closest on PyPI to Ollama's pin; both of v0.33.0's patches
apply to it unchanged). It is not the same commit as b10488 (the patches' pre-image blob ids differ), so
this is Ollama v0.33.0's Go code and patches on a neighbouring llama.cpp.

Cached under `<cache>/v0.33.0` in the same layout as v0.24.0 (`VersionedPaths`, an OllamaPaths, so
`running_ollama(paths=...)` and `models.ensure_models` take it unchanged):

1. **The binary**: `go build` of the module; no cgo inference code any more, so no vendored headers.
   45 s here with the Go build cache the v0.24.0 build had filled (not measured cold).
2. **llama-server, llama-quantize and their libraries** into `lib/ollama/`, where the binary looks
   (`<bindir>/../lib/ollama`, llm/llama_binary.go). llama-quantize is not optional: v0.33.0's
   `ollama create` copies every GGUF through `llama-quantize COPY` (server/create.go
   `copyLayerWithLlamaQuantize`). Only this CPU's ggml variant is built: the upstream `cpu` preset
   (`GGML_CPU_ALL_VARIANTS=ON`) makes `ggml` depend on all 15 x86 variants (550 ninja steps against 329).
   The single `libggml-cpu.so` (the variant's features as `GGML_<F>=ON`, the rest OFF) carries the same
   load-time feature check and is installed as `libggml-cpu-<variant>.so`, as upstream names it (not done:
   `ensure_built` only checks that some variant is there, so a cache moved to another CPU is not
   completed with that CPU's variant as v0.24.0's recipe does). The variant table is read from the
   llama.cpp source itself (`x86_variants`): this one adds cooperlake, zen4 and sapphirerapids, and this
   machine's AMD EPYC loads zen4, where v0.24.0's table says icelake.

Measured on this 2-core machine (2026-12-07, `nice -n 19`, shared): `ensure_built` end to end 785 s (load
average 3-4); the all-variants preset build alone 1,785 s (load average 5-8). `ollama serve` answers
/api/version in 0.1-0.25 s; `ollama create gemma3-270m` 1.7-3.4 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chunkwise.harness.llama_server.build import build_tools
from chunkwise.harness.llama_server.fetch import EngineSetupError, check_sha256
from chunkwise.harness.ollama_server.paths import MODULE, OllamaPaths, cache_root
from chunkwise.harness.ollama_server.toolchain import GoEnv, OllamaSetupError, find_go, need_compilers

NEXT_VERSION = "0.33.0"
#: The PyPI sdist whose vendor/llama.cpp is built (llama.cpp 4df29be4f), and its sha256.
LLAMA_SDIST_VERSION = "0.3.35"
LLAMA_SDIST_SHA256 = "1139dbb54509074b70893fab8554e3b079aa9f4d312058ce4018ef0019e3de12"
#: x86 ggml features in the bit order of `ggml_backend_cpu_x86_score` (ggml-cpu/arch/x86/cpu-feats.cpp):
#: a variant scores 1 + the sum of 2**index of its features; AMX_TILE is required but not scored.
SCORED = ("FMA", "F16C", "SSE42", "BMI2", "AVX", "AVX2", "AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_BF16",
          "AVX512_VNNI", "AMX_INT8")
#: ggml feature -> the /proc/cpuinfo flags that mean it (AVX512 = F, CD, VL, DQ, BW, as the score checks).
CPU_FLAGS = {"FMA": ("fma",), "F16C": ("f16c",), "SSE42": ("sse4_2",), "BMI2": ("bmi2",), "AVX": ("avx",),
             "AVX2": ("avx2",), "AVX_VNNI": ("avx_vnni",),
             "AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
             "AVX512_VBMI": ("avx512vbmi",), "AVX512_BF16": ("avx512_bf16",), "AVX512_VNNI": ("avx512_vnni",),
             "AMX_TILE": ("amx_tile",), "AMX_INT8": ("amx_int8",), "AMX_BF16": ("amx_bf16",)}
BASE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DGGML_BACKEND_DL=ON", "-DGGML_NATIVE=OFF",
              "-DGGML_OPENMP=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF", "-DOLLAMA_RUNNER_DIR=",
              "-DCMAKE_CUDA_COMPILER=NOTFOUND", "-DCMAKE_HIP_COMPILER=NOTFOUND")


@dataclass(frozen=True)
class VersionedPaths(OllamaPaths):
    """OllamaPaths for another Ollama version: `<root>/v<version>/...`, everything else as for v0.24.0."""

    version: str = NEXT_VERSION

    @property
    def version_dir(self) -> Path:
        return self.root / f"v{self.version}"

    @property
    def sdist(self) -> Path:
        return self.root / "dl" / f"llama_cpp_python-{LLAMA_SDIST_VERSION}.tar.gz"


def ollama_paths(root: Path | None = None, version: str = NEXT_VERSION) -> VersionedPaths:
    return VersionedPaths(Path(root) if root is not None else cache_root(), version)


def x86_variants(llama_src: Path) -> dict[str, tuple[str, ...]]:
    """The x86 variants this llama.cpp defines (`ggml_add_cpu_backend_variant(name FEATURE...)` lines of
    ggml/src/CMakeLists.txt), so a newer source with new variants needs no new table here."""
    text = (llama_src / "ggml" / "src" / "CMakeLists.txt").read_text()
    start = text.index("ggml_add_cpu_backend_variant(x64")
    x86 = text[start:text.index("elseif", start)]  # up to the next architecture's branch
    return {m[1]: tuple(m[2].split()) for m in re.finditer(r"ggml_add_cpu_backend_variant\((\w+)\s*([^)]*)\)", x86)}


def pick_variant(variants: dict[str, tuple[str, ...]], cpu_flags: set[str]) -> str:
    """The variant ggml would load on a CPU with these flags: every feature present, highest score."""
    def ok(features: tuple[str, ...]) -> bool:
        return all(flag in cpu_flags for f in features for flag in CPU_FLAGS.get(f, (f.lower(),)))

    def score(features: tuple[str, ...]) -> int:
        return 1 + sum(1 << SCORED.index(f) for f in features if f in SCORED)

    return max((name for name, feats in variants.items() if ok(feats)), key=lambda name: score(variants[name]))


def cpu_flags() -> set[str]:
    line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def ensure_llama_sdist(paths: VersionedPaths, log: Callable[[str], None]) -> Path:
    """The pinned llama-cpp-python sdist (74.9 MB) through pip, sha256-checked."""
    if not paths.sdist.is_file():
        paths.sdist.parent.mkdir(parents=True, exist_ok=True)
        log(f"ollama: downloading the llama-cpp-python {LLAMA_SDIST_VERSION} sdist (74.9 MB) for llama.cpp")
        done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "--no-deps",
                               "--no-binary", ":all:", "--dest", str(paths.sdist.parent),
                               f"llama-cpp-python=={LLAMA_SDIST_VERSION}"], capture_output=True, text=True)
        if done.returncode != 0 or not paths.sdist.is_file():
            raise OllamaSetupError(f"downloading llama-cpp-python=={LLAMA_SDIST_VERSION} failed: "
                                   + " ".join(done.stderr.split()[-30:]) + "; run `make ollama` again")
    try:
        check_sha256(paths.sdist, LLAMA_SDIST_SHA256)
    except EngineSetupError as exc:
        raise OllamaSetupError(str(exc)) from None
    return paths.sdist


def llama_source(sdist: Path, dest: Path) -> Path:
    """vendor/llama.cpp of the sdist in `dest`, without its `.git` file (a submodule link into the sdist's
    .git/modules: `git apply` inside it would fail; Ollama's apply-patch.cmake wants a plain tree)."""
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/")[0]
        prefix = f"{top}/vendor/llama.cpp/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name != prefix + ".git"]
        tar.extractall(dest, members=members, filter="data")
    return dest / top / "vendor" / "llama.cpp"


def module_copy(goenv: GoEnv, version: str, dest: Path, log: Path) -> Path:
    """The module through the Go proxy, copied out of the read-only module cache into `dest`."""
    done = goenv.run(["mod", "download", "-json", f"{MODULE}@v{version}"], log=log,
                     what=f"go mod download {MODULE}@v{version}")
    source = Path(json.loads(done.stdout)["Dir"])
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest)
    subprocess.run(["chmod", "-R", "u+w", str(dest)], check=True)
    return dest


def build_llama_server(src: Path, llama_src: Path, variant: str, features: tuple[str, ...], lib_dir: Path,
                       log: Path, jobs: int) -> Path:
    """Configure Ollama's llama/server project on `llama_src` (it applies Ollama's patches), build
    llama-server and llama-quantize with one CPU variant, install into `lib_dir`'s prefix."""
    if shutil.which("git") is None:
        raise OllamaSetupError("git not found: Ollama's CMake applies its llama.cpp patches with `git apply`; "
                               "install git and run `make ollama` again")
    cmake, ninja = build_tools()
    build, prefix = src / "build" / "llama-server-cpu", lib_dir.parent.parent
    ggml = [f"-DGGML_{f}={'ON' if f in features else 'OFF'}" for f in {*SCORED, *features, "AMX_TILE", "AMX_BF16"}]
    with log.open("a") as out:
        for cmd in (["nice", "-n", "19", cmake, "-S", str(src / "llama" / "server"), "-B", str(build), "-G", "Ninja",
                     f"-DCMAKE_MAKE_PROGRAM={ninja}", *BASE_FLAGS, *sorted(ggml),
                     f"-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP={llama_src}", f"-DCMAKE_INSTALL_PREFIX={prefix}"],
                    ["nice", "-n", "19", cmake, "--build", str(build), "--target", "llama-server", "llama-quantize",
                     "-j", str(jobs)],
                    [cmake, "--install", str(build), "--component", "llama-server"]):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise OllamaSetupError(f"building Ollama's llama-server failed: see {log} (the first `error:` or "
                                       "`llama/compat: failed to apply` names it); run `make ollama` again")
    os.replace(lib_dir / "libggml-cpu.so", lib_dir / f"libggml-cpu-{variant}.so")
    return lib_dir / "llama-server"


def ensure_built(paths: VersionedPaths, log: Callable[[str], None] = print, jobs: int | None = None) -> Path:
    """Binary and lib/ollama of `paths.version`, built when missing; the caller holds the cache lock."""
    lib_dir, jobs = paths.lib_dir, jobs or os.cpu_count() or 2
    if paths.binary.is_file() and (lib_dir / "llama-server").is_file() and any(lib_dir.glob("libggml-cpu-*.so")):
        return paths.binary
    need_compilers()
    go, _ = find_go(paths)
    goenv, work = GoEnv(go, paths), paths.build_dir
    work.mkdir(parents=True, exist_ok=True)
    build_log, start = work / "build.log", time.monotonic()
    log(f"ollama: building Ollama v{paths.version} and llama-server (about 15 minutes on 2 cores); log {build_log}")
    src = module_copy(goenv, paths.version, work / "src", build_log)
    paths.binary.parent.mkdir(parents=True, exist_ok=True)
    goenv.run(["build", "-p", str(jobs), "-trimpath", "-ldflags",
               f"-w -s -X={MODULE}/version.Version={paths.version} -X={MODULE}/server.mode=release",
               "-o", str(paths.binary), "."], cwd=src, log=build_log, what="go build of Ollama")
    llama_src = llama_source(ensure_llama_sdist(paths, log), work / "llama.cpp")
    variants = x86_variants(llama_src)
    variant = pick_variant(variants, cpu_flags())
    build_llama_server(src, llama_src, variant, variants[variant], lib_dir, build_log, jobs)
    log(f"ollama: v{paths.version} built in {time.monotonic() - start:.0f} s (CPU variant {variant})")
    shutil.rmtree(work, ignore_errors=True)
    return paths.binary
