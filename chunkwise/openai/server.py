"""What a run checks on an OpenAI-compatible server before sending anything: the model is served
(`/v1/models`), and `num_ctx` fits the server's context per slot where the server says it
(llama.cpp's `/props`). What Ollama's checks read instead (`/api/version`, `/api/show`, `/api/tags`)
has no OpenAI equivalent: there is no model digest and no architecture metadata, so the manifest
records an empty digest and the KV formula is not applied.
"""

from __future__ import annotations

from typing import Any

from chunkwise.errors import SetupError
from chunkwise.openai.client import OpenAIClient
from chunkwise.params import RunParams


class ServerMismatch(SetupError):
    """The server cannot serve this run as configured; the message says what to change."""


def inspect_openai(client: OpenAIClient, params: RunParams) -> dict[str, Any]:
    """The server facts a run records, in the shape `chunkwise.run.prepare.inspect_server` returns.

    Raises the client's `LLMError` when the server is unreachable or refuses the key, and
    `ServerMismatch` when it does not serve the model or its slots are smaller than num_ctx."""
    served = client.models()
    if served and params.model not in served:
        raise ServerMismatch(
            f"model {params.model!r} is not served at {client.host} (GET /v1/models lists: "
            f"{', '.join(served[:10])}); pass one of them with --model"
        )
    props = client.props() or {}
    n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
    if isinstance(n_ctx, int) and n_ctx > 0 and params.num_ctx > n_ctx:
        raise ServerMismatch(
            f"num_ctx {params.num_ctx} is above the server's context of {n_ctx} tokens per slot (llama-server "
            f"-c divided by -np); use --num-ctx {n_ctx} or less, or restart the server with a larger -c"
        )
    return {"version": str(props.get("build_info") or ""), "is_simulator": False, "digest": "", "show": {},
            "slot_context": n_ctx if isinstance(n_ctx, int) else None}
