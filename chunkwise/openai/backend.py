"""An OpenAI-compatible server as a `chunkwise.backend.Backend`: its base URL, its client, what
`/v1/models` and llama.cpp's `/props` say (`ServerFacts`), and which run options it can honour.

What Ollama's checks read (`/api/version`, `/api/show`, `/api/tags`, `/api/ps`) has no OpenAI
equivalent: there is no model digest, no architecture metadata and no memory view, so the manifest
records an empty digest, the KV formula is not applied at run time and `memory` is None. These
servers keep their model loaded and refuse an over-long prompt on their own (llama.cpp
`exceed_context_size_error`, vLLM "maximum context length"), so there is no `truncate`, `shift` or
`keep_alive` to send; `--think` maps to `reasoning_effort` or `chat_template_kwargs`
(`chunkwise.openai.thinking`) or is refused.

Run options this backend cannot honour, each refused in one line (exit 2) before anything is sent:
a `--keep-alive` other than the default (the server decides how long its model stays loaded), `--pool`
(distributed mode checks each host's model digest, which these servers do not report), and a `--think`
the server cannot take.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from chunkwise.backend import ChatClient, ChatRequest, ModelFacts, ServerFacts
from chunkwise.errors import LLMError, ServerMismatch, SetupError
from chunkwise.openai.client import OpenAIClient
from chunkwise.openai.slots import server_slots
from chunkwise.openai.thinking import resolve_think, think_fields, think_support
from chunkwise.openai.urls import parse_base_url
from chunkwise.params import RunParams

if TYPE_CHECKING:
    from chunkwise.settings import Settings

#: `RunParams.keep_alive`'s default: the one value that does not ask this server for anything.
DEFAULT_KEEP_ALIVE = RunParams.model_fields["keep_alive"].default


def _api(client: ChatClient) -> OpenAIClient:
    # Every client this backend hands out is an OpenAIClient (or a test's stand-in with the same endpoints).
    return cast(OpenAIClient, client)


class OpenAIBackend:
    """`/v1/chat/completions` on llama-server, vLLM, SGLang, LM Studio, Ollama's `/v1` or OpenAI."""

    api = "openai"
    context_fixed_at_start = True

    def kv_engine(self, version: str) -> str:
        """llama.cpp's layout whatever the build: the only OpenAI server whose model file plan can read."""
        return "llama-server"

    def resolve_host(self, host: str | None, settings: Settings) -> str:
        return parse_base_url(host or settings.openai_host)

    def client(self, host: str, settings: Settings, *, connect_timeout_s: float, read_timeout_s: float,
               max_connections: int = 16, stream: bool | None = None) -> ChatClient:
        """The API key is read from the settings here, so it never travels in a run parameter."""
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return OpenAIClient(host, api_key=key, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                            max_connections=max_connections,
                            stream=settings.openai_stream if stream is None else stream)

    def inspect(self, client: ChatClient, model: str) -> ServerFacts:
        """The model is served (`/v1/models`) and, from llama.cpp's `/props`, the slots' context and the
        chat template's thinking switches; the slot count where the server states it (`chunkwise.openai.slots`).
        `SetupError` when the server cannot be asked or lacks the model."""
        api = _api(client)
        try:
            served = api.models()
        except LLMError as exc:  # unreachable, key refused, ...: at the start, the run cannot start
            raise SetupError(str(exc)) from None
        if served and model not in served:
            raise ServerMismatch(f"model {model!r} is not served at {api.host} (GET /v1/models lists: "
                                 f"{', '.join(served[:10])}); pass one of them with --model")
        props = api.props()
        n_ctx = ((props or {}).get("default_generation_settings") or {}).get("n_ctx")
        slots, source = server_slots(api, props)
        return ServerFacts(version=str((props or {}).get("build_info") or ""), think=think_support(props),
                           slot_ctx=n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None, slots=slots,
                           slots_source=source)

    def check(self, params: RunParams, facts: ServerFacts) -> bool | str | None:
        """Refuse what the server cannot honour (see the module docstring); the thinking setting to send."""
        if params.pool:
            raise ServerMismatch("--pool (distributed mode) needs --api ollama: each host's model digest is checked "
                                 "against the run's, and an OpenAI-compatible server reports none")
        if params.keep_alive != DEFAULT_KEEP_ALIVE:
            raise ServerMismatch(f"--keep-alive {params.keep_alive} with --api openai: the server decides how long its "
                                 "model stays loaded (there is no keep_alive field); leave --keep-alive out")
        if facts.slot_ctx is not None and params.num_ctx > facts.slot_ctx:
            raise ServerMismatch(
                f"num_ctx {params.num_ctx} is above the server's context of {facts.slot_ctx} tokens per slot "
                f"(llama-server -c divided by -np); use --num-ctx {facts.slot_ctx} or less, or restart the server "
                "with a larger -c"
            )
        return resolve_think(params.think, facts.think, params.model)

    def request_extras(self, *, think: bool | str | None, keep_alive: str) -> dict[str, Any]:
        return think_fields(think)

    def served_digest(self, client: ChatClient, model: str) -> str:
        return ""

    def memory(self, client: ChatClient, model: str) -> dict[str, Any] | None:
        return None

    def preload(self, client: ChatClient, request: ChatRequest) -> float | None:
        return None  # the server loaded its model when it started; there is no load request

    def probe(self, host: str, model: str, settings: Settings) -> ModelFacts:
        from chunkwise.openai.probe import probe_model

        return probe_model(host, model, settings.api_key.get_secret_value() if settings.api_key else None)
