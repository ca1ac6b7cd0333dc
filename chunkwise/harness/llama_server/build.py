"""Build `llama-server` from the llama.cpp vendored in the pinned llama-cpp-python sdist.

CMake + Ninja, target `llama-server` only, static (`BUILD_SHARED_LIBS=OFF`, so the cached binary needs
no build tree), portable (`GGML_NATIVE=OFF`: SSE4.2/AVX/AVX2/FMA, not this CPU's own flags), and offline
(`LLAMA_USE_PREBUILT_UI=OFF`, or the build downloads a web UI; `LLAMA_CURL=OFF`, `LLAMA_OPENSSL=OFF`).
About 6 minutes on 2 cores (352 s, 206 ninja steps, measured on the 2-core CI machine, 2026-11). The
binary is cached per version and sdist hash (`EnginePaths.server`); a cached one is reused after a quick
`--version` check. A file lock keeps two concurrent `make engine` from building twice.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from chunkwise.harness.llama_server.fetch import EngineSetupError, ensure_sdist
from chunkwise.harness.llama_server.paths import EnginePaths

CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
)
VENDOR = "vendor/llama.cpp"


@contextmanager
def cache_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on `<root>/.lock` for the duration (blocks while another setup holds it)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def binary_works(binary: Path) -> bool:
    """Whether `binary --version` runs (a cached file from an interrupted copy or another libc fails)."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        done = subprocess.run([str(binary), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def build_tools() -> tuple[str, str]:
    """Paths of cmake and ninja; installs the PyPI wheels of both into this environment when the
    machine has neither (they ship the binaries), as the one fallback."""
    cmake, ninja = shutil.which("cmake"), shutil.which("ninja")
    if cmake and ninja:
        return cmake, ninja
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "cmake", "ninja"])
    bindir = Path(sys.executable).parent
    cmake, ninja = shutil.which("cmake") or str(bindir / "cmake"), shutil.which("ninja") or str(bindir / "ninja")
    if done.returncode != 0 or not Path(cmake).exists() or not Path(ninja).exists():
        raise EngineSetupError("cmake and ninja are needed to build llama-server: install them "
                               "(Debian: apt-get install cmake ninja-build) and run `make engine` again")
    return cmake, ninja


def extract_sources(sdist: Path, dest: Path) -> Path:
    """Extract only `vendor/llama.cpp` of the sdist into `dest`; returns the llama.cpp directory."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        top = tar.getmembers()[0].name.split("/")[0]
        prefix = f"{top}/{VENDOR}/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise EngineSetupError(f"{sdist}: no {VENDOR} inside; is it the llama-cpp-python sdist?")
        extract_members(tar, dest, members)
    return dest / top / VENDOR


def extract_members(tar: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo]) -> None:
    """Extract `members` under `dest`, refusing what PEP 706's "data" filter refuses: absolute or escaping
    paths, links that leave `dest`, devices and FIFOs; setuid/setgid/sticky and group/other write bits are
    dropped, as is the owner. The filter
    itself where Python has it (3.11.4+); the same checks here for the Pythons before it (Debian 12's
    /usr/bin/python3 is 3.11.2, whose `extractall` takes no `filter`)."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
        return
    root, source = dest.resolve(), str(tar.name)
    for member in members:
        target = (root / member.name).resolve()
        if member.name.startswith("/") or not target.is_relative_to(root):
            raise EngineSetupError(f"{source}: member {member.name!r} would land outside {dest}; refusing it")
        if member.issym() or member.islnk():
            base = target.parent if member.issym() else root
            if os.path.isabs(member.linkname) or not (base / member.linkname).resolve().is_relative_to(root):
                raise EngineSetupError(f"{source}: link {member.name!r} points outside {dest}; refusing it")
        elif not (member.isfile() or member.isdir()):
            raise EngineSetupError(f"{source}: member {member.name!r} is a device or FIFO; refusing it")
        member.mode &= 0o755
        member.uid = member.gid = os.getuid()
        member.uname = member.gname = ""
    tar.extractall(dest, members=members)


def build_server(paths: EnginePaths, jobs: int | None = None, log: Callable[[str], None] = print) -> Path:
    """Configure and build llama-server into the cache; returns the cached binary."""
    cmake, ninja = build_tools()
    sdist = ensure_sdist(paths, log)
    work = paths.build_dir
    src = extract_sources(sdist, work / "src")
    build = work / "build"
    jobs = jobs or os.cpu_count() or 2
    log(f"engine: building llama-server with {jobs} jobs (about 6 minutes on 2 cores); log {work / 'build.log'}")
    start = time.monotonic()
    with (work / "build.log").open("w") as out:
        for cmd in ([cmake, "-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                     *CMAKE_FLAGS],
                    [cmake, "--build", str(build), "--target", "llama-server", "-j", str(jobs)]):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise EngineSetupError(f"building llama-server failed: see {work / 'build.log'} (its last lines "
                                       "name the error); fix it and run `make engine` again")
    built = build / "bin" / "llama-server"
    paths.server_dir.mkdir(parents=True, exist_ok=True)
    partial = paths.server.with_name(".llama-server.part")
    shutil.copy2(built, partial)
    os.replace(partial, paths.server)
    log(f"engine: built llama-server in {time.monotonic() - start:.0f} s -> {paths.server}")
    shutil.rmtree(work, ignore_errors=True)
    return paths.server


def ensure_server(paths: EnginePaths, log: Callable[[str], None] = print) -> Path:
    """The cached llama-server binary, built when absent or broken."""
    if binary_works(paths.server):
        return paths.server
    with cache_lock(paths.root):
        if binary_works(paths.server):  # built by whoever held the lock before us
            return paths.server
        return build_server(paths, log=log)
