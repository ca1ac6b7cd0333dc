"""The shape of the statistics document (`stats.json`, the run's return value and the Prefect artifact):
`StatsDoc`, computed from results.parquet by `chunkwise.results.stats.compute_stats` and completed by
the run's end (`chunkwise.results.finish`: sessions, truncation, server, run; the flow adds telemetry,
and distributed mode the hosts). Counts are requests or tokens; times in seconds or milliseconds as
the key says; memory in MiB."""

# No `from __future__ import annotations`: `Required` must be seen when the class is made (__required_keys__).
from typing import Any, Required, TypedDict


class RequestCounts(TypedDict):
    total: int
    succeeded: int
    failed: int
    rejected: int
    #: Failed requests per failure class (every class present, 0 when none).
    failed_by_class: dict[str, int]
    #: total == succeeded + failed + rejected
    reconciles: bool


class TokenCounts(TypedDict):
    prompt_evaluated: int
    generated: int
    thinking_tokens_estimated: int
    answers_with_thinking: int
    system_prompt_tokens_estimated: int
    #: naive_tokens, mode_tokens, saved_pct, basis
    system_prompt_savings: dict[str, Any]


class Throughput(TypedDict):
    active_seconds: float
    requests_per_s: float
    generated_tokens_per_s: float
    server_decode_tokens_per_s: float | None


class LatencyMs(TypedDict):
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None


class StatsDoc(TypedDict, total=False):
    """stats.json. The first eight keys are always there; the rest as the run's end and its telemetry add them."""

    requests: Required[RequestCounts]
    tokens: Required[TokenCounts]
    throughput: Required[Throughput]
    latency_ms: Required[LatencyMs]
    chunks: Required[int]
    #: request_retries, conversation_turns_retried_after_trimming (+ chunk_task_retries_this_session)
    retries: Required[dict[str, int]]
    #: load_duration_max_s, requests_with_load_over_100ms
    model_load: Required[dict[str, float]]
    mode: Required[str]
    #: each session's active seconds, requests finished and rate (`chunkwise.results.sessions`)
    sessions: list[dict[str, Any]]
    #: the token calibration, whether truncate: false was sent, whether the server may cut prompts
    truncation: dict[str, Any]
    #: api, host, server_version, is_simulator, model, model_digest
    server: dict[str, Any]
    #: name, dir, sessions, results
    run: dict[str, Any]
    #: the GPU sampler's summary (`chunkwise.gpu.sampler`)
    gpu: dict[str, Any]
    #: the server's memory view at start, after the first chunk and at the end (Ollama's /api/ps)
    ollama_ps: dict[str, Any]
    kv_cache_reserved_mib_formula: float | None
    #: distributed mode: one row per host, and the parent's supervision figures
    hosts: list[dict[str, Any]]
    distributed: dict[str, Any]
