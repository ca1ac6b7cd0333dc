"""Ollama as a `chunkwise.backend.Backend`: its host, its client, what `/api/version`, `/api/show` and
`/api/tags` say (`ServerFacts`), what a run may ask of it, its own request fields and `/api/ps`.

Ollama's request fields, sent with every request of a run (`request_extras`): `truncate: false` and
`shift: false` (an over-long prompt is a 400 and a full context ends the answer, never a silent cut;
honoured from v0.12.6, ignored before: `chunkwise.ollama.versions`), `keep_alive` (how long the model
stays loaded) and `think` where the model's capabilities call for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

from chunkwise.backend import ChatClient, ChatRequest, ModelFacts, ServerFacts
from chunkwise.errors import LLMError, ServerMismatch, SetupError
from chunkwise.ollama import versions
from chunkwise.ollama.client import OllamaClient, parse_host
from chunkwise.ollama.engines import engine_for_version
from chunkwise.ollama.kv import training_context
from chunkwise.ollama.names import model_digest
from chunkwise.ollama.ps import memory_view

if TYPE_CHECKING:
    from chunkwise.params import RunParams
    from chunkwise.settings import Settings


class OllamaApi(Protocol):
    """The endpoints besides chat that this backend reads (`OllamaClient`'s, or a test's fake)."""

    host: str

    def version(self) -> dict[str, Any]: ...

    def show(self, model: str) -> dict[str, Any]: ...

    def tags(self) -> list[dict[str, Any]]: ...

    def ps(self) -> list[dict[str, Any]]: ...

    def load(self, request: ChatRequest) -> float: ...


def _api(client: ChatClient | OllamaApi) -> OllamaApi:
    # Every client this backend hands out is an OllamaClient (or a test's stand-in with the same endpoints).
    return cast(OllamaApi, client)


#: Why `--parallel auto` cannot read an Ollama's slot count: OLLAMA_NUM_PARALLEL is read by the server
#: (envconfig.NumParallel) and no endpoint reports it (/api/ps lists models, /api/version the version).
NO_SLOT_COUNT = "Ollama does not state its slot count (OLLAMA_NUM_PARALLEL) through its API"


def facts_of(version: dict[str, Any], show: dict[str, Any], tags: list[dict[str, Any]], model: str) -> ServerFacts:
    """`ServerFacts` from the three answers: digest by Ollama's name rule, capabilities, model_info."""
    number = str(version.get("version", ""))
    info = show.get("model_info") or {}
    return ServerFacts(version=number, digest=model_digest(tags, model), model_info=info,
                       think=versions.think_support(show), training_ctx=training_context(info),
                       is_simulator=bool(version.get("is_simulator")), memory_view=True, truncate_switch=True,
                       cuts_prompts=versions.cuts_prompts(number), slots=None, slots_source=NO_SLOT_COUNT)


class OllamaBackend:
    """Ollama's `/api/*` (see the module docstring)."""

    api = "ollama"
    context_fixed_at_start = False

    def kv_engine(self, version: str) -> str:
        """llama-server's layout from v0.30, the Go runners' before (`chunkwise.ollama.engines`)."""
        return engine_for_version(version)

    def resolve_host(self, host: str | None, settings: Settings) -> str:
        return parse_host(host or settings.ollama_host)

    def client(self, host: str, settings: Settings, *, connect_timeout_s: float, read_timeout_s: float,
               max_connections: int = 16, stream: bool | None = None) -> ChatClient:
        return OllamaClient(host, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                            max_connections=max_connections, stream=True if stream is None else stream)

    def inspect(self, client: ChatClient | OllamaApi, model: str) -> ServerFacts:
        """Version, model and digest; `SetupError` on an unreachable server or a missing model."""
        api = _api(client)
        try:
            version, show, tags = api.version(), api.show(model), api.tags()
        except LLMError as exc:  # unreachable, model not found, ...: nothing can be run or checked
            raise SetupError(str(exc)) from None
        return facts_of(version, show, tags, model)

    def check(self, params: RunParams, facts: ServerFacts) -> bool | str | None:
        """Refuse 0.30.0, a `--think` the model cannot honour and a num_ctx above the model's context."""
        refusal = versions.refuse_version(facts.version)
        if refusal:
            raise ServerMismatch(refusal)
        think = versions.resolve_think(params.think, facts.think, params.model)
        if facts.training_ctx is not None and params.num_ctx > facts.training_ctx:
            raise ServerMismatch(
                f"num_ctx {params.num_ctx} is above {params.model}'s maximum context of {facts.training_ctx} tokens "
                f"(Ollama would silently clamp it); use --num-ctx {facts.training_ctx} or less"
            )
        return think

    def request_extras(self, *, think: bool | str | None, keep_alive: str) -> dict[str, Any]:
        extras: dict[str, Any] = {"truncate": False, "shift": False, "keep_alive": keep_alive}
        if think is not None:
            extras["think"] = think
        return extras

    def served_digest(self, client: ChatClient | OllamaApi, model: str) -> str:
        return model_digest(_api(client).tags(), model)

    def memory(self, client: ChatClient | OllamaApi, model: str) -> dict[str, Any] | None:
        """The model's `/api/ps` entry, with `cpu_only` when every loaded model has size_vram 0 (a server
        without a GPU: nothing spilled), else `spill_warning` when part of it runs on the CPU."""
        return memory_view(_api(client).ps(), model)

    def preload(self, client: ChatClient | OllamaApi, request: ChatRequest) -> float | None:
        """An empty-`messages` chat with the run's num_ctx and fields: Ollama schedules (loads) the model and
        answers `done_reason: "load"` (`v0.24.0:server/routes.go:2383-2392`, after `scheduleRunner`)."""
        return _api(client).load(request)

    def probe(self, host: str, model: str, settings: Settings) -> ModelFacts:
        from chunkwise.ollama.probe import probe_model

        return probe_model(host, model)
