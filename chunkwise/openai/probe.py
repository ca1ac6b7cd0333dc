"""What `chunkwise plan --api openai` asks an OpenAI-compatible server, read-only and bounded in time:
whether it serves the model (`GET /v1/models`), and, from llama.cpp's `GET /props`, its slots
(`total_slots`, and `default_generation_settings.n_ctx` tokens per slot) and the model file it
loaded (`model_path`).

llama-server does not send the architecture numbers the KV formula needs (layer count, KV heads,
head size, sliding window and layer pattern: `/props` and `/v1/models` `meta` carry only
`n_ctx_train`, `n_embd`, `n_params`, `size`; tools/server/server-context.cpp `get_res_props` and
`get_res_model_info` in the llama.cpp vendored by llama-cpp-python 0.3.36, commit 0c1e570), so the
plan reads them from the GGUF header at `model_path` (`chunkwise.openai.gguf`), as
`chunkwise measure --local-engine` does. That works when the server runs on this machine, which is
the only case chunkwise supports (loopback hosts only). The weights' size is the GGUF file's size.

Other OpenAI-compatible servers (vLLM, SGLang, OpenAI) have no `/props`: the plan then says the KV
layout is unknown and why, and still shows the chunking (and SGLang's slot count, `chunkwise.openai.slots`).
A probe never stops a plan; only a host that is not an http(s) URL is an error
(`chunkwise.errors.ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chunkwise.backend import PROBE_TIMEOUT_S, ModelFacts
from chunkwise.errors import LLMError, SetupError
from chunkwise.openai.client import OpenAIClient
from chunkwise.openai.gguf import read_metadata
from chunkwise.openai.slots import server_slots
from chunkwise.units import MIB


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def probe_model(host: str, model: str, api_key: str | None = None) -> ModelFacts:
    """Probe the OpenAI-compatible server at `host` for `model` (see the module docstring).

    Raises `ConfigError` for a host that is not an http(s) URL."""
    client = OpenAIClient(host, api_key=api_key, connect_timeout_s=PROBE_TIMEOUT_S, read_timeout_s=PROBE_TIMEOUT_S,
                          stream=False)
    try:
        try:
            served = client.models()
        except (LLMError, ValueError):
            return ModelFacts(None, f"unknown (no answer from {client.host}/v1/models; start the server or pass "
                                     "--host)")
        if served and model not in served:
            return ModelFacts(None, f"unknown (model {model!r} is not served at {client.host}; GET /v1/models lists "
                                     f"{', '.join(served[:10])}: pass one of them with --model)")
        props = client.props()
        slots, _ = server_slots(client, props)  # llama-server's /props, else SGLang's endpoints
    finally:
        client.close()
    if props is None:
        return ModelFacts(None, f"unknown ({client.host} has no llama.cpp /props, so its model file is unknown; the "
                                 "KV formula needs llama-server)", slots=slots)
    settings = props.get("default_generation_settings")
    slot_ctx = _positive_int(settings.get("n_ctx")) if isinstance(settings, dict) else None
    path = props.get("model_path")
    if not isinstance(path, str) or not path:
        return ModelFacts(None, f"unknown ({client.host}/props names no model_path)", None, slot_ctx, slots)
    gguf = Path(path)
    try:
        info = read_metadata(gguf)
        weights = gguf.stat().st_size / MIB
    except OSError as exc:
        return ModelFacts(None, f"unknown (the server's model file {gguf} is not readable here: "
                                 f"{exc.strerror or exc}; run plan on the server's machine)", None, slot_ctx, slots)
    except SetupError as exc:  # GGUFError: not a GGUF, or a truncated one
        return ModelFacts(None, f"unknown ({exc})", None, slot_ctx, slots)
    return ModelFacts(info, f"GGUF header of {gguf} (llama-server /props at {client.host})", weights, slot_ctx, slots)
