"""What a chunk task needs to know about its run (`RunContext`, small and picklable, passed as a
Prefect task parameter) and the per-process objects built from it (`Runtime`: the HTTP client, the
server-slot semaphore, the token estimator, the stop flag), which are never pickled.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from chunkwise.ollama.client import OllamaClient
from chunkwise.openai.client import OpenAIClient
from chunkwise.params import RunParams
from chunkwise.run.breaker import CircuitBreaker
from chunkwise.settings import get_settings
from chunkwise.tokens import TokenEstimator


class RunContext(BaseModel):
    """Everything about a run that a chunk needs, fixed when the run starts."""

    model_config = ConfigDict(frozen=True)

    run_dir: str
    params: RunParams
    host: str
    system_prompt: str
    input_fingerprint: str
    model_digest: str
    server_version: str
    is_simulator: bool
    #: Send `truncate: false` and `shift: false` (honoured from Ollama 0.12.6, ignored before) so an
    #: over-long prompt is a 400 and a full context ends the answer, never a silent cut.
    send_truncate_false: bool
    chars_per_token: float
    #: `think` to send (None: leave it out), resolved from the model's capabilities at setup.
    think: bool | str | None = None

    @property
    def dir(self) -> Path:
        return Path(self.run_dir)

    def options(self, num_predict: int | None = None) -> dict[str, Any]:
        """Ollama `options` for every request: num_ctx always explicit (a change reloads the model)."""
        p = self.params
        return {
            "num_ctx": p.num_ctx,
            "num_predict": num_predict or p.num_predict,
            "temperature": p.temperature,
            "seed": p.seed,
        }

    def content_key(self) -> str:
        """Digest of everything that determines the answers; equal keys mean reusable results."""
        p = self.params
        material = {
            "input": self.input_fingerprint,
            "model": p.model,
            "digest": self.model_digest,
            "options": self.options(),
            "mode": p.mode,
            "system": hashlib.sha256(self.system_prompt.encode()).hexdigest(),
            "format": p.format,
            "trim": p.trim_threshold,
            "chars_per_token": self.chars_per_token,
        }
        if self.think is not None:  # absent for models that cannot think: their keys stay as they were
            material["think"] = self.think
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass
class Runtime:
    """Per-process state shared by all chunks of one run."""

    client: OllamaClient | OpenAIClient
    slots: threading.BoundedSemaphore
    estimator: TokenEstimator
    stop: threading.Event = field(default_factory=threading.Event)
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(5))
    #: The first fatal error (a fatal answer, or a run directory that cannot be written); once set,
    #: every chunk stops sending.
    fatal: Exception | None = None


def make_client(api: str, host: str, *, connect_timeout_s: float, read_timeout_s: float,
                max_connections: int = 16) -> OllamaClient | OpenAIClient:
    """The one place that chooses the server client for a run's `api`. The OpenAI API key is read
    from the settings here, so it never travels in a run parameter or the RunContext."""
    if api == "openai":
        s = get_settings()
        return OpenAIClient(host, api_key=s.api_key.get_secret_value() if s.api_key else None,
                            connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                            max_connections=max_connections, stream=s.openai_stream)
    return OllamaClient(host, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                        max_connections=max_connections)


_runtimes: dict[str, Runtime] = {}
_lock = threading.Lock()
#: Set by the CLI's SIGINT/SIGTERM handler: stop sending, let in-flight requests finish.
STOP = threading.Event()


def get_runtime(ctx: RunContext) -> Runtime:
    with _lock:
        rt = _runtimes.get(ctx.run_dir)
        if rt is None:
            s = get_settings()
            client = make_client(ctx.params.api, ctx.host, connect_timeout_s=s.connect_timeout_s,
                                 read_timeout_s=s.read_timeout_s, max_connections=ctx.params.parallel + 4)
            rt = Runtime(client, threading.BoundedSemaphore(ctx.params.parallel), TokenEstimator(ctx.chars_per_token),
                         STOP, CircuitBreaker(ctx.params.breaker_threshold, ctx.params.parallel))
            _runtimes[ctx.run_dir] = rt
        return rt


def release_runtime(ctx: RunContext) -> None:
    """Close the run's client and give up the run directory (the run is over in this process)."""
    from chunkwise.store import lock as runlock

    with _lock:
        rt = _runtimes.pop(ctx.run_dir, None)
    if rt is not None:
        rt.client.close()
    runlock.release(ctx.dir)
