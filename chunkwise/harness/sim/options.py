"""`SimOptions`: every setting of the Ollama simulator, shared by the CLI, the harness and /sim/config.

Each field maps onto one `chunkwise sim` flag (`--` + the field name with `-` for `_`, e.g.
`load_ms` -> `--load-ms`, except `FLAG_NAMES`); `chunkwise.commands.sim` builds the parser from this
model, so a new field is a new flag. Rates of 0 mean "infinitely fast": the simulator then never sleeps.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chunkwise.harness.sim.era import CURRENT_VERSION, Era, era_of
from chunkwise.harness.sim.timing import BATCH_GAIN, PREFILL_SHARE

TruncationMode = Literal["keep-tail", "minus-one", "half", "error"]
LoadFailure = Literal["none", "load", "oom"]
FAULT_FIELDS = ("fail_rate", "reset_rate", "stall_rate", "incomplete_rate", "stream_error_rate")
#: Fields fixed for the life of a server (POST /sim/config refuses them).
STARTUP_ONLY = ("host", "port")
#: Fields whose `chunkwise sim` flag is not `--field-name`: the names every command shares
#: (`chunkwise.commands.flags`) for the address a server listens on, one slot's rates, the fault draws' seed.
FLAG_NAMES = {"host": "--bind", "prefill_tps": "--slot-prefill-tps", "decode_tps": "--slot-decode-tps",
              "seed": "--fault-seed"}


def flag_for(name: str) -> str:
    """The `chunkwise sim` flag of a field."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


class SimOptions(BaseModel):
    """Settings of one simulated Ollama server."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on; loopback by default.")
    port: int = Field(default=11434, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    parallel: int = Field(
        default=1, ge=1, le=1024, description="Parallel slots, like OLLAMA_NUM_PARALLEL (Ollama's default is 1)."
    )
    max_queue: int = Field(
        default=512,
        ge=0,
        description="Requests that may wait in the queue for a model (re)load, like OLLAMA_MAX_QUEUE, besides "
        "the one the scheduler is loading for; one more is answered 503 at once. As in Ollama >= 0.11.5 "
        "(Ollama's server/sched.go:197-208) requests for the loaded model wait without limit.",
    )
    num_ctx_default: int = Field(
        default=4096, ge=4,
        description="Context (tokens) when a request sets no options.num_ctx (OLLAMA_CONTEXT_LENGTH)."
    )
    prefill_tps: float = Field(
        default=0.0, ge=0, description="Prompt evaluation rate of one slot, tokens/s; 0 = instant."
    )
    decode_tps: float = Field(
        default=0.0, ge=0,
        description="Generation rate of one slot, tokens/s (several busy slots: see batch_gain); 0 = instant.",
    )
    attention_scale_tokens: int = Field(
        default=131072,
        ge=0,
        description="Context slowdown: a token at context position p costs (1 + p / this) times the "
        "base time (1.98x at 131,072: one decode step of a Llama-3.1-8B shape on an H100 80GB, 2026-11-26, "
        "chunkwise/plan/report.py ATTENTION_CONTEXT); 0 disables it.",
    )
    load_ms: float = Field(default=0.0, ge=0, description="Model (re)load time, milliseconds (a real sleep).")
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field(
        default="f16", description="KV cache element type (OLLAMA_KV_CACHE_TYPE); sizes /api/ps."
    )
    vram_mib: int = Field(
        default=81920, ge=0, description="GPU memory, MiB (81920 = H100 80GB); /api/ps size_vram = min(size, this)."
    )
    truncation: TruncationMode | None = Field(
        default=None,
        description="Over-length prompts: keep-tail (Ollama 0.4-0.29: first num_keep + last tokens, "
        "exactly num_ctx), minus-one (0.30.0-0.30.10: num_ctx - 1), half (>= 0.30.11: "
        "num_ctx - (num_ctx - keep) // 2), error (HTTP 400); unset = the one of --ollama-version.",
    )
    answer_tokens: tuple[int, int] = Field(
        default=(16, 256),
        description="MIN:MAX natural answer length in tokens (num_predict and 10 x num_ctx cap it).",
    )
    stream_chunk_tokens: int = Field(
        default=1, ge=1, description="Tokens per streamed NDJSON line (Ollama sends 1)."
    )
    keep_alive_default_s: float = Field(
        default=300.0,
        description="keep_alive when a request sends none, seconds (OLLAMA_KEEP_ALIVE 5m); < 0 = forever."
    )
    fail_rate: float = Field(default=0.0, ge=0, le=1, description="Share of chat/generate requests answered 500.")
    reset_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share whose connection is reset after part of the body."
    )
    stall_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share that hold their slot silently for stall_s before answering."
    )
    stall_s: float = Field(default=30.0, ge=0, description="Length of a stall, seconds.")
    incomplete_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share answered 200 without done:true and without metrics."
    )
    stream_error_rate: float = Field(
        default=0.0, ge=0, le=1,
        description="Share whose 200 stream ends with an {\"error\": ...} line after some tokens (a runner "
        "crash mid-answer); with stream false a 500 after the modelled time.",
    )
    poison_rate: float = Field(
        default=0.0, ge=0, le=1,
        description="Share of requests (by fingerprint: every retry of one meets it again) answered 500 with a "
        "template error once the model is loaded, as Ollama answers a chat it cannot render (faults.py).",
    )
    repeat_rate: float = Field(
        default=0.0, ge=0, le=1,
        description="Share of requests (by fingerprint) whose answer at temperature 0 repeats one token: 31 "
        "tokens, then the answer ends without done (Ollama's repeat abort, faults.py); warmer ones are answered.",
    )
    load_failure: LoadFailure = Field(
        default="none",
        description="Persistent load failure: load = every model load fails (HTTP 500, the runner cannot "
        "start the model); oom = loads with num_ctx >= oom_num_ctx fail out of memory; none = healthy. "
        "Setting it through /sim/config unloads the model.",
    )
    oom_num_ctx: int = Field(
        default=0, ge=0, description="With load_failure oom: the smallest per-slot num_ctx that fails (0 = every one)."
    )
    compute_buffers: bool = Field(
        default=True,
        description="Count the runner's compute buffers (activations and attention masks for one batch, "
        "chunkwise/harness/sim/memory.py) in /api/ps size, as every Ollama does; off leaves weights + KV only.",
    )
    token_density: float = Field(
        default=1.0, ge=1.0, le=4.0,
        description="Tokens per base token: > 1 splits tokens as a smaller vocabulary needs more of them for "
        "the same text (1.5 = 50% more); the base tokenizer already counts by character class (Gemma 3).",
    )
    thinking_tokens: tuple[int, int] = Field(
        default=(32, 256),
        description="MIN:MAX thinking length in tokens for thinking-capable models (num_predict caps it).",
    )
    prefill_share: float = Field(
        default=PREFILL_SHARE, ge=0, le=1,
        description="Continuous batching: share of the engine a prefill takes from the other slots' "
        "decoding while it runs (chunkwise/harness/sim/timing.py).",
    )
    batch_gain: float = Field(
        default=BATCH_GAIN, ge=0, le=1,
        description="Continuous batching: aggregate decode rate with n busy slots is decode_tps x n^this "
        "(1 = perfect scaling, 0 = no gain; chunkwise/harness/sim/timing.py).",
    )
    decode_batch_tps: float = Field(
        default=0.0, ge=0,
        description="Continuous batching, step-time model: aggregate decode rate with every slot busy, "
        "tokens/s (decode_tps is one sequence alone); the rate rises with the busy slots and flattens there "
        "(timing.py). 0 = the batch_gain power law.",
    )
    kv_layout: Literal["reserved", "paged"] = Field(
        default="reserved",
        description="KV cache memory in /api/ps: reserved = num_ctx x parallel cells at load (Ollama, "
        "llama-server); paged = a block pool that takes what the GPU has left (vLLM, SGLang), so many slots "
        "never spill (sim/memory.py).",
    )
    preset: Literal["none", "fast-engine"] = Field(
        default="none",
        description="Start from a named set of values (sim/presets.py, every number's source there); flags "
        "given beside it win. fast-engine: 256 slots, decode saturating at ~5,800 tokens/s, prefill 30,000 "
        "tokens/s, paged KV (vLLM/SGLang on one H100, FP8).",
    )
    seed: int = Field(default=0, description="Seed of the fault draws (output text depends on options.seed).")
    model_build: str = Field(
        default="", description="Another build of every model: mixed into the digest /api/tags and /api/ps "
        "report, as on a host that pulled a different build of the same name (empty = the usual digest)."
    )
    ollama_version: str = Field(
        default=CURRENT_VERSION,
        description="Version reported by GET /api/version; selects the era's behaviour (chunkwise/harness/sim/era.py).",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A preset fills every field the caller did not give (`presets.PRESETS`)."""
        if isinstance(data, dict) and data.get("preset") not in (None, "none"):
            from chunkwise.harness.sim.presets import PRESETS

            values = PRESETS.get(str(data["preset"]))
            if values is not None:
                return {**values, **data}
        return data

    @field_validator("answer_tokens", "thinking_tokens", mode="before")
    @classmethod
    def _parse_range(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            lo, sep, hi = value.partition(":")
            if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
                raise ValueError(f"{info.field_name} must be MIN:MAX in tokens, e.g. 16:256; got {value!r}")
            return (int(lo), int(hi))
        return value

    @field_validator("answer_tokens", "thinking_tokens")
    @classmethod
    def _check_range(cls, value: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1]:
            raise ValueError(f"{info.field_name} needs 1 <= MIN <= MAX; got {value[0]}:{value[1]}")
        return value

    @model_validator(mode="after")
    def _check_fault_sum(self) -> SimOptions:
        total = sum(getattr(self, name) for name in FAULT_FIELDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates {', '.join(FAULT_FIELDS)} add up to {total:g}; they must add up to <= 1")
        return self

    @property
    def era(self) -> Era:
        return era_of(self.ollama_version)

    @property
    def truncation_mode(self) -> str:
        """The truncation in force: the explicit option, else the era's."""
        return self.truncation or self.era.truncation

    def updated(self, changes: dict[str, Any]) -> SimOptions:
        """A validated copy with `changes` applied (all fields checked together)."""
        return SimOptions.model_validate({**self.model_dump(), **changes})
