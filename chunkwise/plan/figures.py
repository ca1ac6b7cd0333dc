"""The run plan's figures (`Plan`), as `chunkwise.plan.report.build_plan` computes them; JSON from
`Plan.as_dict()`, text from `Plan.render()` (`chunkwise.plan.render`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from chunkwise.inputs.summary import Reject
from chunkwise.plan.render import render_lines

MAX_PARALLEL = 64  # RunParams.parallel's upper bound


@dataclass(frozen=True)
class TokenStats:
    """Estimated prompt tokens per accepted request."""

    min: int
    p50: int
    mean: float
    p95: int
    max: int


@dataclass(frozen=True)
class Plan:
    input_path: str
    rows: int
    accepted: int
    rejected: int
    first_rejects: tuple[Reject, ...]
    mode: str
    model: str
    num_ctx: int
    parallel: int
    num_predict: int
    expected_answer_tokens: int
    chars_per_token: float
    budget_tokens: int
    budget_source: str  # "num_ctx" or "chunk_token_budget"
    chunk_size: int
    chunk_size_computed: bool
    chunk_count: int
    chunk_sizes: tuple[int, int]  # smallest and largest chunk
    prompt_tokens: TokenStats | None  # None without accepted rows
    system_prompt_tokens: int
    mean_request_tokens: float  # (prompt + own system) tokens + expected answer tokens
    conversation_peak_tokens: int | None  # system + largest chunk x mean request tokens
    trim_at_tokens: int | None  # trim_threshold x num_ctx
    model_info_source: str
    training_context: int | None
    kv_cache_type: str
    kv_mib_per_token: float | None
    kv_reason: str | None  # why kv_mib_per_token is unknown
    kv_reserved_mib: float | None  # kv_mib_per_token x num_ctx x parallel, plus the sliding-window layers
    weights_mib: float | None
    #: Ollama's estimate of the compute buffers of its automatic num_batch at this num_ctx x parallel (v0.30+), MiB.
    compute_buffer_mib: float
    free_vram_mib: float | None
    gpu_reason: str | None
    fits: bool | None
    fit_detail: str
    largest_request_tokens: int  # system + largest prompt, estimated
    independent_num_ctx: int  # smallest num_ctx (1024 multiple) fitting the largest request + num_predict
    independent_slots: int | None  # parallel slots of independent_num_ctx that fit the free VRAM
    slots_at_num_ctx: int | None  # parallel slots of num_ctx that fit the free VRAM
    too_long_count: int  # accepted requests whose system + prompt + num_predict exceed num_ctx
    too_long_ids: tuple[Any, ...]
    eta_s: float | None
    eta_detail: str
    advice: tuple[str, ...] = field(default=())
    #: Whose KV layout the figures follow: "ollama", or "llama-server" (`--api openai`).
    engine: str = "ollama"
    #: llama-server's tokens per slot and slots (`/props`), None when unknown or for Ollama.
    server_slot_ctx: int | None = None
    server_slots: int | None = None
    #: The server's version as it reports it ("" when it does not say: taken as current).
    server_version: str = ""
    #: What one more num_ctx token costs in one slot besides its KV: the compute graph's f16 attention mask
    #: (`chunkwise.ollama.graph`), MiB; and both together, what the server's memory grows by per num_ctx token
    #: and slot (Ollama's /api/ps size); None when the model is unknown.
    mask_mib_per_token: float | None = None
    memory_mib_per_token: float | None = None
    #: The attention masks at num_ctx x parallel, MiB, and the runner's batch (num_batch / n_ubatch), tokens.
    mask_mib: float = 0.0
    batch: int = 512

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, nested dataclasses dicts."""
        plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        return plain

    def render(self) -> str:
        return "\n".join(render_lines(self))
