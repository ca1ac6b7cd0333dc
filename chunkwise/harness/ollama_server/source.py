"""The Ollama module through the Go proxy, a writable copy of it, and the Go binary built from it.

Shared by both versions' recipes. `go mod download` leaves the module read-only in Go's module cache, and
the builds write into the tree (cgo headers for v0.24.0; Ollama's CMake applies patches and writes its build
tree under it for v0.33.0), so each build works in a copy under `OllamaPaths.build_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from chunkwise.harness.ollama_server.paths import MODULE, OllamaPaths, ldflags
from chunkwise.harness.ollama_server.toolchain import GoEnv, OllamaSetupError, parse_go_version


def module_source(goenv: GoEnv, version: str, log: Path) -> Path:
    """Download the module through the proxy (a no-op when Go's cache has it); returns its read-only
    directory. OllamaSetupError when the module's `go` line needs a newer Go than `goenv.go`."""
    done = goenv.run(["mod", "download", "-json", f"{MODULE}@v{version}"], log=log,
                     what=f"go mod download {MODULE}@v{version}")
    info = json.loads(done.stdout)
    needed = parse_go_version(Path(info["GoMod"]).read_text().partition("\ngo ")[2].split("\n")[0])
    have = parse_go_version(subprocess.run([goenv.go, "version"], capture_output=True, text=True,
                                           env=goenv.env()).stdout)
    if needed and have and have < needed:
        raise OllamaSetupError(f"{MODULE}@v{version} needs Go {'.'.join(map(str, needed))}, {goenv.go} is "
                               f"{'.'.join(map(str, have))}: install a newer Go and run "
                               f"`{goenv.paths.setup_command}` again")
    return Path(info["Dir"])


def writable_copy(source: Path, dest: Path) -> Path:
    """A copy of the module (read-only in the module cache) that the build may write into."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest)
    for root, dirs, files in os.walk(dest):
        for name in (*dirs, *files):
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
    dest.chmod(dest.stat().st_mode | 0o200)
    return dest


def build_binary(goenv: GoEnv, src: Path, paths: OllamaPaths, log: Path, jobs: int) -> Path:
    """`go build` in the copied source; the binary replaces the cached one atomically."""
    paths.binary.parent.mkdir(parents=True, exist_ok=True)
    partial = paths.binary.with_name(".ollama.part")
    goenv.run(["build", "-p", str(jobs), "-trimpath", "-ldflags", ldflags(paths.version), "-o", str(partial), "."],
              cwd=src, log=log, what=f"go build of Ollama v{paths.version}")
    os.replace(partial, paths.binary)
    return paths.binary


def binary_works(paths: OllamaPaths) -> bool:
    """Whether `ollama --version` runs and names the version (a truncated copy or another libc fails)."""
    binary = paths.binary
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=30,
                              env={**os.environ, "OLLAMA_HOST": "127.0.0.1:1"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return paths.version.encode() in done.stdout + done.stderr
