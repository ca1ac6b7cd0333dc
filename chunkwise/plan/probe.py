"""What `chunkwise plan` asks the machine and the server, read-only and bounded in time: the model's
architecture numbers (`/api/show` `model_info`, for the KV-cache formula), its weights' size
(`/api/tags`), and the free GPU memory here (NVML).

Neither probe stops a plan: an unreachable server or a missing model gives "unknown" with the
reason and what to do, so a plan still shows the chunking and token figures. Only a host that is
not an http(s) URL is an error (`chunkwise.errors.ConfigError`).
"""

from __future__ import annotations

from typing import Any

from chunkwise.errors import LLMError, ModelNotFound
from chunkwise.gpu import nvml as gpu
from chunkwise.ollama.client import OllamaClient
from chunkwise.units import MIB

#: Connect and read timeout of each probe request, seconds: a plan must stay fast (bench/plan_speed.py).
SHOW_TIMEOUT_S = 2.0


def fetch_model_info(host: str, model: str) -> tuple[dict[str, Any] | None, str, float | None]:
    """(model_info, where it came from, weights MiB or None): the server's /api/show (weights from
    the model's file size in /api/tags), else None and "unknown (reason; what to do)". There is no
    offline fallback: a plan is only as good as the server's own numbers.

    Raises `ConfigError` for a host that is not an http(s) URL."""
    client = OllamaClient(host, connect_timeout_s=SHOW_TIMEOUT_S, read_timeout_s=SHOW_TIMEOUT_S, stream=False)
    try:
        info = client.show(model).get("model_info")
        if not isinstance(info, dict):
            raise LLMError("no model_info in /api/show")
        weights = None
        try:  # the model file's size is about the weights' size in memory
            sizes = [m.get("size") for m in client.tags() if model in (m.get("name"), m.get("model"))]
            weights = sizes[0] / MIB if sizes and sizes[0] else None
        except (LLMError, ValueError):
            pass
        return info, f"server /api/show at {client.host}", weights
    except ModelNotFound:
        return None, f"unknown (model {model!r} not on the server; `ollama pull {model}`)", None
    except (LLMError, ValueError):
        return None, "unknown (server unreachable; start it or pass --host)", None
    finally:
        client.close()


def free_vram() -> tuple[float | None, str | None]:
    """Free GPU memory on this machine, MiB, or None and the reason."""
    try:
        return gpu.free_vram_mib()
    except Exception as exc:  # noqa: BLE001 - a GPU probe must never stop a plan (NVML raises its own classes)
        return None, f"GPU probe failed: {exc}"
