"""A real Ollama for tests, benchmarks and trials: v0.24.0 built from its Go module, on loopback.

`make ollama` (`python -m chunkwise.harness.ollama_server.setup`) builds it into the user's cache and
creates the `gemma3-270m` model from the packaged GGUF; `chunkwise ollama` and `running_ollama()` start it.
"""
