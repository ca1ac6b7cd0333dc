"""A shard's check of its own Ollama before it sends anything.

Every host must answer exactly as the run's manifest says: the same model digest (the digest is
part of the run's content key, so answers from another build of the model would mix two models in
one results file), a `num_ctx` within the model's training context (Ollama would silently clamp it),
and the model not spilled to the CPU per `/api/ps` (`size_vram < size`: every request several times
slower, so the host would hold its shard far longer than the others). A host that fails any check
raises `HostUnusable`, which no retry can fix: the shard fails at once and its work moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chunkwise.backend import Backend, ChatClient
from chunkwise.errors import HostUnusable, LLMError, SetupError


@dataclass(frozen=True)
class HostCheck:
    """What the preflight found on a usable host (recorded in the per-host statistics)."""

    host: str
    digest: str
    version: str
    model_info: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "digest": self.digest, "version": self.version, "digest_matches": True}


def check_host(backend: Backend, client: ChatClient, host: str, *, model: str, digest: str,
               num_ctx: int) -> HostCheck:
    """Check `host` against the run through its backend (`chunkwise.servers`): model digest equal to
    `digest` (found by the server kind's one name rule), `num_ctx` within the model's context, no CPU
    spill in the memory view (when the model is loaded). Raises `HostUnusable`."""
    try:
        facts = backend.inspect(client, model)
        memory = backend.memory(client, model)
    except (SetupError, LLMError) as exc:
        raise HostUnusable(f"host {host} cannot be checked ({exc}); start Ollama there or stop its worker") from None
    if facts.digest != digest:
        got = facts.digest[:12] if facts.digest else "none (model not pulled)"
        raise HostUnusable(
            f"host {host} serves {model} with digest {got}, but the run needs digest {digest[:12]}; "
            f"pull that exact model on {host} (ollama pull {model}) or stop its worker"
        )
    max_ctx = facts.training_ctx
    if max_ctx is not None and num_ctx > max_ctx:
        raise HostUnusable(f"host {host}: num_ctx {num_ctx} is above {model}'s context of {max_ctx} tokens there; "
                           "the run's num_ctx must fit on every host")
    spill = (memory or {}).get("spill_warning")
    if spill:
        raise HostUnusable(f"host {host} runs {model} partly on the CPU ({spill.split(': ', 1)[1].split(', so')[0]}); "
                           "lower OLLAMA_NUM_PARALLEL there or stop its worker")
    return HostCheck(host=host, digest=facts.digest, version=facts.version, model_info=dict(facts.model_info))
