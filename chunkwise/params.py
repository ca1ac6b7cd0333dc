"""The parameters of one batch run: one pydantic model, used by the CLI and as the Prefect flow's
parameter (the Prefect UI renders it as a form with these bounds and descriptions and rejects bad
values before a run starts).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Mode = Literal["conversation", "independent"]
Api = Literal["ollama", "openai"]
OutputFormat = Literal["parquet", "openai"]
Think = Literal["off", "on", "low", "medium", "high"]

#: Run names become a directory name: letters, digits, `.`, `_`, `-`; no leading dot.
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Go duration strings as Ollama parses `keep_alive` (a bare number string is rejected by Ollama).
GO_DURATION_RE = re.compile(r"^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$")
#: Most requests a run keeps in flight: vLLM's default max_num_seqs on an H100 (1,024).
MAX_PARALLEL = 1024


def _form_order(schema: dict[str, Any]) -> None:
    """Number the fields in declaration order: the Prefect UI sorts its form by `position`."""
    for position, field in enumerate(schema.get("properties", {}).values()):
        field["position"] = position


class RunParams(BaseModel):
    """One batch: which requests, which model, how they are chunked and sent."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_form_order)

    input_path: str = Field(
        description="Parquet file of requests: `id` (unique string or integer), `prompt` (string) or "
        "`messages` (a list of {role, content}: a multi-turn chat ending with the user's turn), optional "
        "`system`; other columns are carried through to the results. Or an OpenAI Batch API input file "
        "(`.jsonl`: custom_id, method, url, body), whose custom_id becomes the id and whose body options "
        "(max_tokens, temperature, top_p, stop, seed, response_format) apply to that line.",
        min_length=1,
    )
    id_column: str | None = Field(
        default=None, min_length=1,
        description="The input column holding the request ids. Empty: `id`.",
    )
    prompt_column: str | None = Field(
        default=None, min_length=1,
        description="The input column holding the requests: strings are prompts, lists of {role, content} "
        "are chats. Empty: `prompt`, else `messages`.",
    )
    limit: int | None = Field(
        default=None, ge=1,
        description="Send only the first N rows of the input (a trial run); part of the run's identity. "
        "Empty: every row.",
    )
    model: str = Field(
        default="llama3.1:8b",
        min_length=1,
        description="Model name as the server knows it: an Ollama tag, or a model id of GET /v1/models with "
        "api openai. An OpenAI batch file given without a model runs the model its lines name.",
    )
    host: str | None = Field(
        default=None,
        description="The server's base URL (http or https). Empty: for api ollama CHUNKWISE_OLLAMA_HOST, then "
        "OLLAMA_HOST, then http://127.0.0.1:11434; for api openai CHUNKWISE_OPENAI_HOST, then "
        "http://127.0.0.1:8080.",
    )
    api: Api = Field(
        default="ollama",
        description="The server's API. ollama: Ollama's /api/chat. openai: /v1/chat/completions of an "
        "OpenAI-compatible server (llama.cpp's llama-server, vLLM, SGLang, LM Studio, Ollama's /v1); host "
        "then defaults to CHUNKWISE_OPENAI_HOST or http://127.0.0.1:8080, the API key comes from "
        "CHUNKWISE_API_KEY, and num_ctx must not exceed the server's context per slot.",
    )
    mode: Mode = Field(
        default="independent",
        description="independent (default): every request on its own with the system prompt first, so the "
        "server's prefix cache serves it, up to `parallel` in flight; each answer depends on its request "
        "alone. conversation: one chat per chunk, the system prompt once, each request a user turn after "
        "the chunk's earlier ones (fewer prompt tokens, but answers see each other and a paid API bills "
        "the growing history on every turn).",
    )
    num_ctx: int = Field(
        default=8192,
        ge=256,
        le=1_048_576,
        description="Context window per server slot, tokens, sent on every request to Ollama (a change "
        "reloads the model); Ollama reserves num_ctx x parallel tokens of KV cache at load. Not given: "
        "8192, which most models accept, or the server's own context per slot where it states one "
        "(llama-server) or the model's trained context where that is smaller.",
    )
    chunk_size: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Requests per chunk. Empty: floor(0.8 x (budget - system prompt tokens) / mean "
        "tokens per request), the budget being num_ctx (conversation) or chunk_token_budget (independent).",
    )
    parallel: int = Field(
        default=4,
        ge=1,
        le=MAX_PARALLEL,
        description="Requests in flight at once; match the server's slots (OLLAMA_NUM_PARALLEL, llama-server "
        "-np, whose default is 4; vLLM max_num_seqs, SGLang max_running_requests; up to 1,024), or 'auto': the "
        "count the server states (llama-server, SGLang; `parallel_auto`). More than the server has wait in its "
        "queue; in conversation mode it is the number of conversations in flight.",
    )
    parallel_auto: bool = Field(
        default=False,
        description="Take `parallel` from the server's own slot count at the run's start (`parallel: auto` sets "
        "it). Where the server does not state one (Ollama, vLLM) the run says so and keeps `parallel`.",
    )
    system_prompt: str = Field(
        default="", description="System prompt for every request (a row's `system` overrides it)."
    )
    system_prompt_file: str | None = Field(
        default=None, description="Read the system prompt from this UTF-8 file instead of `system_prompt`."
    )
    num_predict: int = Field(
        default=512, ge=1, le=131_072, description="Most tokens generated per answer; never unlimited."
    )
    expected_answer_tokens: int = Field(
        default=200,
        ge=1,
        le=131_072,
        description="Mean answer length assumed when sizing chunks and estimating time, tokens.",
    )
    temperature: float = Field(
        default=0.0, ge=0.0, le=2.0,
        description="Sampling temperature; 0 for reproducible batches (a batch file line's own temperature "
        "wins for that line).",
    )
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1,
        description="Sampling seed sent with every request (a batch file line's own seed wins for that line).",
    )
    keep_alive: str = Field(
        default="30m",
        description="How long Ollama keeps the model loaded after a request (Go duration such as '30m', "
        "'24h'; '-1m' keeps it forever).",
    )
    trim_threshold: float = Field(
        default=0.875,
        gt=0.1,
        le=1.0,
        description="Conversation mode: when the running context passes this fraction of num_ctx, the "
        "oldest request/answer pairs are dropped (the system prompt is kept). Unused in independent mode.",
    )
    chunk_token_budget: int = Field(
        default=128_000,
        ge=1_000,
        le=10_000_000,
        description="Independent mode: tokens of work (prompt + expected answer) per chunk, used to size "
        "chunks when chunk_size is empty (a chunk is then only the unit of checkpoint and retry).",
    )
    chars_per_token: float = Field(
        default=4.0,
        gt=1.0,
        le=10.0,
        description="Characters per token assumed for sizing chunks and trimming conversations (fixed for "
        "the run so a resumed conversation trims as the original did); truncation detection recalibrates "
        "from the run's own answers.",
    )
    format: dict[str, Any] | None = Field(
        default=None, description="JSON schema the answers must follow (Ollama structured outputs)."
    )
    max_attempts: int = Field(
        default=6, ge=1, le=50, description="Attempts per request for transient failures (connection, timeout, 5xx)."
    )
    invalid_output_attempts: int = Field(
        default=3, ge=1, le=20,
        description="Attempts per request whose answer fails the JSON schema, and per request whose answer ends "
        "without done: true (Ollama's repeated-token abort); each retry is warmer (greedy decoding repeats itself).",
    )
    retry_output_truncated: bool = Field(
        default=False,
        description="Retry an answer cut by num_predict (done_reason 'length') once with twice the num_predict.",
    )
    think: Think | None = Field(
        default=None,
        description="Thinking models: off | on | low | medium | high (levels only where the model takes "
        "them). Empty: off (think: false) for models whose /api/show capabilities include 'thinking' "
        "(low for gpt-oss, which cannot stop thinking), not sent otherwise. Refused for a model that "
        "cannot think. The trace goes to the `thinking` results column.",
    )
    breaker_threshold: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Stop the run (exit 2, every answer kept, resumable) when this many different rows in a row "
        "(plus parallel - 1, one burst) failed with the same server error (a model that cannot load, out of "
        "memory, a bad option) or ended without done: true; read timeouts stop it at min(this, 2) rows. A row's "
        "own retries never count twice: a row that fails every attempt (a poison row) is recorded failed and "
        "the run goes on.",
    )
    allow_spill: bool = Field(
        default=False,
        description="Run even when the server's memory view shows part of the model on the CPU of a GPU server "
        "(a spill: every request several times slower); without it such a run stops before the first request. "
        "A server without a GPU is not a spill.",
    )
    output_dir: str = Field(default="runs", min_length=1, description="Directory holding run directories.")
    output_format: OutputFormat | None = Field(
        default=None,
        description="parquet: results.parquet. openai: also the OpenAI Batch API output and error files "
        "(batch_output.jsonl, batch_errors.jsonl: one line per request, custom_id = id) beside it. Empty: "
        "openai for an OpenAI batch file input (.jsonl), else parquet.",
    )
    run_name: str | None = Field(
        default=None,
        description="Run directory name under output_dir (letters, digits, '.', '_', '-'). Reusing a name "
        "resumes that run. Empty: `<input file stem>-<12 hex digits>`, a digest of the input's content and of "
        "every option that changes the answers or the chunks, so running the same command again resumes.",
    )
    new_run: bool = Field(
        default=False,
        description="Start a fresh run even when a run of that name exists (the old run is kept untouched; "
        "the new one gets a suffixed name: -2, -3, ...).",
    )
    retry_failed: bool = Field(
        default=False,
        description="On an existing run, also send again the requests that failed (the ones never answered "
        "are always sent).",
    )

    pool: str | None = Field(
        default=None,
        description="Distributed mode: the Prefect work pool whose workers (one per Ollama host, `chunkwise worker`) "
        "run the shards. Needs a Prefect server (PREFECT_API_URL) and output_dir on storage every host shares. "
        "Empty: everything runs in this process against one server.",
    )
    shard_requests: int | None = Field(
        default=None, ge=1,
        description="Distributed mode: requests per shard (whole chunks), fixed. Empty: shards of --shard-seconds "
        "at the hosts' measured rate (chunkwise/plan/shards.py).",
    )
    shard_seconds: float = Field(
        default=180.0, gt=0,
        description="Distributed mode: seconds of one host's work per shard, at the rate the run measures on its "
        "hosts (a few minutes keeps Prefect's per-shard cost small and the tail short).",
    )

    def with_server_context(self, slot_ctx: int | None, training_ctx: int | None) -> RunParams:
        """These params with the default num_ctx fitted to the server (when num_ctx was not given): the
        server's context per slot where it fixes one (llama-server `-c / -np`), else the model's trained
        context where that is below the default. A num_ctx that was given is kept, and checked later."""
        if "num_ctx" in self.model_fields_set:
            return self
        fitted = slot_ctx if slot_ctx else min(self.num_ctx, training_ctx or self.num_ctx)
        if fitted == self.num_ctx or fitted < 256:
            return self
        return self.model_copy(update={"num_ctx": fitted})

    @model_validator(mode="before")
    @classmethod
    def _parallel_auto(cls, data: Any) -> Any:
        """`parallel: auto` (the CLI's `--parallel auto`) is `parallel_auto` with `parallel`'s default."""
        if isinstance(data, dict) and isinstance(data.get("parallel"), str) and data["parallel"].strip() == "auto":
            data = {k: v for k, v in data.items() if k != "parallel"}
            data["parallel_auto"] = True
        return data

    @field_validator("run_name")
    @classmethod
    def _safe_run_name(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not RUN_NAME_RE.match(value) or ".." in value:
            raise ValueError(
                f"run_name {value!r} is not a plain directory name: use letters, digits, '.', '_' and '-' "
                "(no '/', no '..', not starting with '.')"
            )
        return value

    @field_validator("keep_alive")
    @classmethod
    def _go_duration(cls, value: str) -> str:
        if not GO_DURATION_RE.match(value.strip()):
            raise ValueError(
                f"keep_alive {value!r} is not a Go duration; write it with a unit such as '30m', '24h' or '-1m'"
            )
        return value.strip()

    @field_validator("format")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from chunkwise.schemas import schema_problem  # jsonschema only when a schema is given

        problem = schema_problem(value) if value is not None else None
        if problem:
            raise ValueError(f"format is not a valid JSON schema ({problem}); fix the schema or leave format out")
        return value

    @model_validator(mode="after")
    def _one_system_prompt(self) -> RunParams:
        if self.system_prompt and self.system_prompt_file:
            raise ValueError("give system_prompt or system_prompt_file, not both")
        return self
