"""Which engine an Ollama server runs a model in, by the server's version and the model's architecture, and
which of its layers that engine gives a sliding-window cache (see `chunkwise.ollama.kv` for the cells).

- From v0.30.0 every model runs in llama-server (commit 9db4bdb, "use llama-server exclusively"): engine
  "llama-server", the layout of llama.cpp's iswa cache (Ollama passes no `--swa-full`,
  `v0.33.0:llm/llama_server.go:369-377`). A source build reports 0.0.0 (`version/version.go`) and is taken
  as current, as is a server that does not say.
- Before (engine "ollama"), read in v0.24.0 and taken to hold for the Go-runner eras: the architectures
  `fs/ggml/ggml.go:277-303` (`OllamaEngineRequired`) lists run in Ollama's own engine, with one cache for
  all slots; the rest in the vendored llama.cpp runner, one cache stream per slot, every layer full.
"""

from __future__ import annotations

from collections.abc import Callable

from chunkwise.ollama.compute import version_tuple

ENGINES = ("ollama", "llama-server")
#: First Ollama release that runs every model in llama-server.
LLAMA_SERVER_SINCE = (0, 30, 0)
#: Batch sizes: Ollama's num_batch and llama-server's n_ubatch default to 512 tokens.
DEFAULT_BATCH = 512
#: llama.cpp's default SWA period per architecture when the GGUF has no sliding_window_pattern
#: (vendored llama.cpp 0c1e570, `src/models/*.cpp`): (period, dense_first). Gemma 2's window
#: defaults to 4096 when the file has none (`src/models/gemma2.cpp`).
SWA_PERIODS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma-embedding": (6, False), "cohere2": (4, False),
    "gpt-oss": (2, False), "exaone4": (4, False),
}
#: Ollama's architecture names that llama-server knows under another: Ollama's "gptoss" GGUFs are renamed
#: for it (`v0.33.0:llama/compat/llama-ollama-compat.cpp:1500-1527`).
LLAMA_CPP_NAMES = {"gptoss": "gpt-oss"}
#: Architectures Ollama's own engine requires before v0.30 (`v0.24.0:fs/ggml/ggml.go:277-303`).
GO_ENGINE_ARCHS = frozenset({
    "bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "gemma4", "gptoss", "gpt-oss", "laguna", "llama4",
    "mistral3", "mllama", "nemotron_h", "nemotron_h_moe", "nemotron_h_omni", "nomic-bert", "olmo3", "qwen25vl",
    "qwen3", "qwen3moe", "qwen35", "qwen35moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "glm4moelite", "glmocr",
    "lfm2", "lfm2moe",
})
#: The layers Ollama's engine windows (v0.24.0): architecture -> (whether layer i is SWA, cells kept per slot
#: besides the batch, None: the window). gemma3: every sixth layer is global
#: (`model/models/gemma3/model_text.go:241-246`, `NewSWACache(window)` in `model.go:96`); gpt-oss: the even
#: layers slide (`model/models/gptoss/model.go:36-39`, `NewSWAMemCache(window, 4096)` at `:239`). Other
#: windowed models of that engine (gemma3n, gemma4, olmo3, laguna) count as full: an upper bound.
GO_ENGINE_SWA: dict[str, tuple[Callable[[int], bool], int | None]] = {
    "gemma3": (lambda i: (i + 1) % 6 != 0, None),
    "gptoss": (lambda i: i % 2 == 0, 4096),
    "gpt-oss": (lambda i: i % 2 == 0, 4096),
}


def engine_for_version(version: str) -> str:
    """Whose KV layout an Ollama of `version` allocates: "llama-server" from v0.30 (and for 0.0.0 or an unknown
    version), "ollama" (its Go runners) before."""
    v = version_tuple(version)
    return "llama-server" if v >= LLAMA_SERVER_SINCE or v == (0, 0, 0) else "ollama"


def go_engine(arch: str, engine: str) -> bool:
    """Whether `arch` runs in Ollama's own engine (one cache for all slots), not llama.cpp (one per slot)."""
    return engine == "ollama" and arch in GO_ENGINE_ARCHS
