"""Memory truth around a run: the model loaded before the first chunk (`chunkwise.run.preload`: a load
that fails or spills stops the run there), the GPU sampler, and the server's own memory view (Ollama's
`/api/ps`, through the run's backend) after the load, after every chunk (a reload by another client,
`chunkwise.run.reloads`) and at the end.

The sampler measures the GPUs of the machine chunkwise runs on. When the server runs on another host
its VRAM is invisible here: run `chunkwise measure` on that host instead.
"""

from __future__ import annotations

from typing import Any

from chunkwise.backend import Backend, ChatClient
from chunkwise.errors import LLMError
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.logs import RunLogger, logger
from chunkwise.ollama.compute import runner_batch
from chunkwise.ollama.kv import kv_reserved_bytes, training_context
from chunkwise.run.preload import preload
from chunkwise.run.session import RunSession
from chunkwise.settings import get_settings
from chunkwise.units import MIB


def log() -> RunLogger:
    return logger("chunkwise.run.telemetry")


def memory_snapshot(backend: Backend, client: ChatClient, model: str, *,
                    warn_spill: bool = True) -> dict[str, Any] | None:
    """The model's entry in the server's memory view (size, size_vram, context_length; `spill_warning`
    when part of it runs on the CPU, warned about loudly here unless `warn_spill` is false; `cpu_only` on a
    server without a GPU); None where the server has no such view, the model is not loaded, or the view
    cannot be read (a warning, never an error)."""
    try:
        entry = backend.memory(client, model)
    except LLMError as exc:
        log().warning("could not read the memory view of %s: %s", client.host, exc)
        return None
    if warn_spill and entry is not None and entry.get("spill_warning"):
        log().warning("%s", entry["spill_warning"])
    return entry


class RunTelemetry:
    """Context manager: sampler running and the memory view read at start; summary dict at the end.

    `load` false skips the preload (a re-run of a run whose every chunk is checkpointed sends nothing, not
    even the load); the memory view is then read as it is. `preloaded` is a preload done already (the CLI's
    head start): its record and memory view are used, nothing is loaded again."""

    def __init__(self, session: RunSession, model_info: dict[str, Any] | None = None, *, load: bool = True,
                 preloaded: tuple[dict[str, Any], dict[str, Any] | None] | None = None) -> None:
        self.session = session
        self._load = load
        self._preloaded = preloaded
        self.ctx = session.ctx
        self.backend = session.backend
        self.client = session.client
        self.model_info = model_info
        self.sampler = GpuSampler(self.ctx.dir, interval_s=get_settings().gpu_sample_interval_s)
        self.ps_start: dict[str, Any] | None = None
        self.ps_loaded: dict[str, Any] | None = None
        self._loaded_taken = False
        self.kv_mib: float | None = None
        self.load: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}
        self._spill_warned = False

    def _snapshot(self) -> dict[str, Any] | None:
        warn = not self._spill_warned and self.load.get("placement") != "spill"  # the preload judged it already
        entry = memory_snapshot(self.backend, self.client, self.ctx.params.model, warn_spill=warn)
        self._spill_warned = self._spill_warned or bool(warn and entry and entry.get("spill_warning"))
        return entry

    def __enter__(self) -> RunTelemetry:
        p = self.ctx.params
        if self.model_info:
            try:
                # the layout of the server's era (Ollama v0.30+: llama-server's windows) at its runner's batch
                version = self.ctx.server_version
                batch = runner_batch(version, p.num_ctx, p.parallel, training_context(self.model_info))
                reserved = kv_reserved_bytes(self.model_info, p.num_ctx, p.parallel,
                                             engine=self.backend.kv_engine(version), batch=batch)
                self.kv_mib = round(reserved / MIB, 1)
            except ValueError:
                self.kv_mib = None
        if self.kv_mib is not None:
            log().info("num_ctx %d x parallel %d: the server reserves about %.0f MiB of KV cache at load (%s)",
                       p.num_ctx, p.parallel, self.kv_mib, "formula from the server's model_info")
        if self._preloaded is not None:  # loaded by the CLI's head start (`chunkwise.run.headstart`)
            self.load, self.ps_start = self._preloaded
        elif self._load:
            self.load, self.ps_start = preload(self.session)  # stops the run on a load failure or a spill
        else:
            self.load, self.ps_start = {"load_s": None, "placement": None}, self._snapshot()
        self.session.reloads.expect(self.ps_start)
        self.sampler.start()
        return self

    def after_chunk(self) -> None:
        """Read the memory view after every chunk (one GET): the first reading is kept for stats.json, and a
        model reloaded by another client at another context length is named (`chunkwise.run.reloads`)."""
        if self.ps_start is None and self._loaded_taken:
            return  # the server has no memory view (or could not list the model after loading it)
        entry = self._snapshot()
        if not self._loaded_taken:
            self._loaded_taken = True
            self.ps_loaded = entry
        if self.ps_start is not None:
            self.session.reloads.memory_seen(entry)

    def __exit__(self, *exc: object) -> None:
        ps_end = self._snapshot()
        gpu = self.sampler.stop()
        self.summary = {
            "gpu": gpu,
            "ollama_ps": {"start": self.ps_start, "after_first_chunk": self.ps_loaded, "end": ps_end},
            "kv_cache_reserved_mib_formula": self.kv_mib,
            "model_load": {"preload": self.load, "reloads": self.session.reloads.summary()},
        }
