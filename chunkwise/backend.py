"""The contract between the run and an LLM server, so nothing outside the backend rooms (`chunkwise.ollama`,
`chunkwise.openai`) and their one factory (`chunkwise.servers.backend_for`) asks which server it talks to.

A `Backend` is chosen once per run from `RunParams.api` and owns everything that differs per server kind:
where the server is, its client, what the server says it is (`ServerFacts`, one shape for every kind), which
run options it can honour (a refusal is a one-line `SetupError`, exit 2), the server's own request fields
(`ChatRequest.extras`), its memory view and what `chunkwise plan` can learn from it (`ModelFacts`).

A client (`ChatClient`) turns one `ChatRequest` into a complete `ChatResult` or raises an `LLMError` subclass
from `chunkwise.errors` (the same classes for every backend: transient ones are retried, `ContextExceeded` is
recorded as a failed request, `FatalError` stops the run). It must be safe to call from many threads at once:
a run sends up to `parallel` requests concurrently through one client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from chunkwise.params import RunParams
    from chunkwise.settings import Settings

#: Connect and read timeout of each `chunkwise plan` probe request, seconds: a plan must stay fast.
PROBE_TIMEOUT_S = 2.0


@dataclass
class ChatResult:
    """One complete answer. Token counts are the server's own; durations are integer nanoseconds
    (0 when the server omitted the field, which Ollama does for zero values)."""

    content: str
    done_reason: str
    prompt_eval_count: int
    eval_count: int
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_duration: int = 0
    eval_duration: int = 0
    #: Client-side wall time of the request, nanoseconds.
    wall_ns: int = 0
    #: A thinking model's reasoning trace; its tokens are in eval_count.
    thinking: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class ChatOptions(NamedTuple):
    """Sampling options in neutral names; each client writes them in its server's words (Ollama
    `options.num_ctx`/`num_predict`, OpenAI `max_tokens`; a context the server fixes at start is not sent).
    A named tuple, like `ChatRequest`: immutable, and made once per request at the cost of a tuple."""

    context_tokens: int  # tokens of context per server slot
    max_answer_tokens: int  # tokens the answer may take
    temperature: float
    seed: int
    #: Nucleus sampling and stop sequences: sent only when a request asks for them (an OpenAI batch line's
    #: own `top_p` and `stop`); None leaves the server's default.
    top_p: float | None = None
    stop: tuple[str, ...] | None = None


class ChatRequest(NamedTuple):
    """One chat request. `format` is a JSON schema or "json"; `extras` are the backend's own wire fields
    (`Backend.request_extras`, fixed for a run), sent as they are."""

    model: str
    messages: list[dict[str, str]]
    options: ChatOptions
    format: dict[str, Any] | str | None = None
    extras: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ThinkSupport:
    """What the server says about the model's thinking: whether it can think at all (None: the server
    does not say), whether a request can turn it on and off, and whether it takes levels (low, medium,
    high), possibly only levels (gpt-oss cannot stop thinking)."""

    can_think: bool | None = None
    switch: bool = False
    levels: bool = False
    levels_only: bool = False
    #: What the server said, for a refusal's message (Ollama: the model's /api/show capabilities).
    note: str = ""


@dataclass(frozen=True)
class ServerFacts:
    """What a server says it is, in one shape for every server kind (`Backend.inspect`)."""

    #: The server's version ("" when it does not say; Ollama source builds say 0.0.0).
    version: str
    #: The model's digest ("" when the server lists none: OpenAI-compatible servers, or an alias).
    digest: str = ""
    #: GGUF-style architecture numbers (`{arch}.block_count`, ...) for the KV formula; {} when unknown.
    model_info: Mapping[str, Any] = field(default_factory=dict)
    think: ThinkSupport = ThinkSupport()
    #: Largest context the model runs at, tokens (Ollama clamps num_ctx to it silently); None: unknown.
    training_ctx: int | None = None
    #: Tokens of context per server slot where the server fixes it (llama-server `-c / -np`); None: per request.
    slot_ctx: int | None = None
    is_simulator: bool = False
    #: The server reports a loaded model's memory (`Backend.memory`: Ollama's /api/ps).
    memory_view: bool = False
    #: The API has a per-request switch that asks for an over-long prompt to be refused instead of cut
    #: (Ollama's `truncate: false`, sent to every Ollama: servers before 0.12.6 ignore it).
    truncate_switch: bool = False
    #: The server may cut an over-long prompt silently: Ollama before 0.12.6. False where it refuses one
    #: with an error (Ollama 0.12.6+ and its 0.0.0 source builds given `truncate: false`; llama-server, vLLM).
    cuts_prompts: bool = False
    #: Requests the server decodes at once where it states it (llama-server `/props` total_slots, SGLang
    #: max_running_requests); None where it does not (Ollama, vLLM). `--parallel auto` takes it.
    slots: int | None = None
    #: Where `slots` was read, or why the server's slot count is unknown (for the run's log line).
    slots_source: str = ""


@dataclass(frozen=True)
class ModelFacts:
    """What `chunkwise plan` learnt from a server, read-only: `model_info` (None when unknown; `source` then
    says why and what to do), the weights' size (MiB), tokens per slot and the slot count where the
    server says them."""

    model_info: dict[str, Any] | None
    source: str
    weights_mib: float | None = None
    slot_ctx: int | None = None
    slots: int | None = None
    #: The server's version ("" when it does not say), for its KV layout (`Backend.kv_engine`).
    version: str = ""


@runtime_checkable
class ChatClient(Protocol):
    """What a run needs from an LLM server's client: chat requests, and closing the connection pool."""

    host: str

    def chat(self, request: ChatRequest) -> ChatResult:
        """Send one chat request; return the complete answer or raise an `LLMError` subclass."""
        ...

    def close(self) -> None:
        """Release the connection pool; the client is not used afterwards."""
        ...


class Backend(Protocol):
    """One server kind (`chunkwise.servers.backend_for`). Takes plain values, never a run's context."""

    #: The `RunParams.api` value this backend serves.
    api: str
    #: The server fixes its context when it starts (no per-request num_ctx), so `chunkwise measure`
    #: restarts a local engine per context instead of loading the model per request.
    context_fixed_at_start: bool

    def kv_engine(self, version: str) -> str:
        """Whose KV layout (`chunkwise.ollama.kv`) a server of `version` (`ServerFacts.version`,
        `ModelFacts.version`; "" when unknown) allocates: "ollama" or "llama-server"."""
        ...

    def resolve_host(self, host: str | None, settings: Settings) -> str:
        """The normalised base URL: `host`, else the settings' host for this kind; `ConfigError` if bad."""
        ...

    def client(self, host: str, settings: Settings, *, connect_timeout_s: float, read_timeout_s: float,
               max_connections: int = 16, stream: bool | None = None) -> ChatClient:
        """A client on `host` (timeouts in seconds; `stream` None: the backend's default)."""
        ...

    def inspect(self, client: ChatClient, model: str) -> ServerFacts:
        """Ask the server what it is and whether it serves `model`; `SetupError` when it cannot say."""
        ...

    def check(self, params: RunParams, facts: ServerFacts) -> bool | str | None:
        """Refuse (`SetupError`, one line) any run option this server cannot honour; return the run's
        thinking setting as this backend sends it (None: not sent)."""
        ...

    def request_extras(self, *, think: bool | str | None, keep_alive: str) -> dict[str, Any]:
        """The server's own request fields for every request of a run (`ChatRequest.extras`)."""
        ...

    def served_digest(self, client: ChatClient, model: str) -> str:
        """The digest the server lists for `model` ("" when none); raises `LLMError`."""
        ...

    def memory(self, client: ChatClient, model: str) -> dict[str, Any] | None:
        """The loaded model's memory as the server reports it (Ollama /api/ps: size, size_vram bytes,
        context_length tokens, plus `spill_warning` when part of it runs on the CPU of a server that has a GPU,
        or `cpu_only` when the server runs every loaded model on the CPU); None where the server has no such
        view or the model is not loaded. Raises `LLMError`."""
        ...

    def preload(self, client: ChatClient, request: ChatRequest) -> float | None:
        """Load `request.model` with the run's options and fields (`request.messages` is empty) before the first
        row is sent, so a model that cannot load, or loads onto the CPU, is known before anything is paid for;
        the seconds it took, or None where the server has no such step (it keeps its model loaded).
        Raises `LLMError`."""
        ...

    def probe(self, host: str, model: str, settings: Settings) -> ModelFacts:
        """`chunkwise plan`'s read-only look at the server, bounded by PROBE_TIMEOUT_S per request;
        never raises for an unreachable server (only `ConfigError` for a bad host)."""
        ...
