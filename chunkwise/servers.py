"""The one place that chooses the server kind: `backend_for(api)` turns `RunParams.api` into the
`chunkwise.backend.Backend` that owns everything which differs per kind. No other module branches on
the API or imports a concrete client (both are rules in `tests/test_rules.py`): the run, the plan,
measure and distributed mode ask the backend object instead.

A backend is imported when first asked for, so `chunkwise --help` and `chunkwise plan` load no HTTP
client they do not use. `BACKENDS` holds the ones made so far; it is also the seam a test uses to stand
a wrapping backend in for a real one (`monkeypatch.setitem(servers.BACKENDS, "ollama", ...)`), which
reaches every client a flow makes.
"""

from __future__ import annotations

from chunkwise.backend import Backend
from chunkwise.errors import ConfigError

#: The `RunParams.api` values, in the order the CLI lists them.
APIS = ("ollama", "openai")
#: The backend of each api made so far (see the module docstring).
BACKENDS: dict[str, Backend] = {}


def _make(api: str) -> Backend:
    if api == "ollama":
        from chunkwise.ollama.backend import OllamaBackend

        return OllamaBackend()
    if api == "openai":
        from chunkwise.openai.backend import OpenAIBackend

        return OpenAIBackend()
    raise ConfigError(f"unknown api {api!r}; use one of {', '.join(APIS)}")


def backend_for(api: str) -> Backend:
    """The backend for `api` ("ollama" or "openai"); `ConfigError` for anything else."""
    backend = BACKENDS.get(api)
    if backend is None:
        backend = BACKENDS[api] = _make(api)
    return backend
