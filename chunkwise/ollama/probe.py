"""What `chunkwise plan` asks an Ollama server, read-only and bounded in time: the model's architecture
numbers (`/api/show` `model_info`, for the KV-cache formula), its weights' size (the model file's size
in `/api/tags`, found by Ollama's name rule, `chunkwise.ollama.names`) and the server's version
(`/api/version`: which engine lays out its KV cache, `chunkwise.ollama.engines`).

A probe never stops a plan: an unreachable server or a missing model gives "unknown" with the reason
and what to do, so a plan still shows the chunking and token figures. There is no offline fallback: a
plan is only as good as the server's own numbers. Only a host that is not an http(s) URL is an error
(`chunkwise.errors.ConfigError`, raised by the client).
"""

from __future__ import annotations

from chunkwise.backend import PROBE_TIMEOUT_S, ModelFacts
from chunkwise.errors import LLMError, ModelNotFound
from chunkwise.ollama.client import OllamaClient
from chunkwise.ollama.names import find_model
from chunkwise.units import MIB


def probe_model(host: str, model: str) -> ModelFacts:
    """`model_info` from the server's /api/show, the weights' MiB from /api/tags (None when unlisted)."""
    client = OllamaClient(host, connect_timeout_s=PROBE_TIMEOUT_S, read_timeout_s=PROBE_TIMEOUT_S, stream=False)
    try:
        info = client.show(model).get("model_info")
        if not isinstance(info, dict):
            raise LLMError("no model_info in /api/show")
        weights, version = None, ""
        try:  # the model file's size is about the weights' size in memory
            entry = find_model(client.tags(), model)
            size = entry.get("size") if entry else None
            weights = size / MIB if isinstance(size, int | float) and size else None
        except (LLMError, ValueError):
            pass
        try:  # "" (taken as current) when the server does not say
            version = str(client.version().get("version") or "")
        except (LLMError, ValueError):
            pass
        return ModelFacts(info, f"server /api/show at {client.host}", weights, version=version)
    except ModelNotFound:
        return ModelFacts(None, f"unknown (model {model!r} not on the server; `ollama pull {model}`)")
    except (LLMError, ValueError):
        return ModelFacts(None, "unknown (server unreachable; start it or pass --host)")
    finally:
        client.close()
