"""The Ollama simulator: a protocol-faithful local Ollama server for tests, the demo and benchmarks.

It never passes for a real server: every response has `X-Ollama-Simulator: chunkwise` and
GET /api/version adds `"simulator": "chunkwise"`. Start it with `chunkwise sim` or, from Python,
with `running_simulator` (see harness.py).
"""

from chunkwise.harness.sim.fingerprint import chat_fingerprint, generate_fingerprint, request_fingerprint
from chunkwise.harness.sim.harness import SimHandle, running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.profiles import PROFILES, ModelProfile, resolve

__all__ = [
    "PROFILES",
    "ModelProfile",
    "SimHandle",
    "SimOptions",
    "chat_fingerprint",
    "generate_fingerprint",
    "request_fingerprint",
    "resolve",
    "running_simulator",
]
