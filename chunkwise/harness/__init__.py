"""The harness: servers and clusters chunkwise starts for tests, demos, benchmarks and users' trials.

Nothing here is on the path of a production run against a user's server. The rooms:

- `sim/`: `chunkwise sim`, an Ollama simulator written from Ollama's source (the witness the tests and
  the demo run against; checked response for response against a real Ollama);
- `llama_server/`: llama.cpp's llama-server built from the pinned llama-cpp-python sdist, with the
  packaged Gemma 3 270M model (`make engine`, `chunkwise engine`);
- `ollama_server/`: a real Ollama built from its Go module (`make ollama`, `chunkwise ollama`);
- `cluster/`: a loopback cluster (PostgreSQL, a Prefect server, simulated hosts and their workers) for
  `make cluster-demo`, the cluster tests and the scale-out benchmarks.

Production code may import the harness only where a command exists to start it (the rule is a test:
tests/test_rules.py).
"""
