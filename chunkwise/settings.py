"""Process-wide settings, read once from the environment (prefix `CHUNKWISE_`).

Settings are what an operator configures for a machine (where Ollama lives, timeouts, sampling
interval); what one batch does is a flow parameter (`chunkwise.params.RunParams`). `OLLAMA_HOST` is
honoured the way Ollama's own client honours it when `CHUNKWISE_OLLAMA_HOST` is not set.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
#: Requests in flight from which `stream: auto` asks for whole answers: above what any Ollama host runs
#: usefully (a few to 16 slots); the engines that batch this many decode thousands of tokens/s, one NDJSON
#: or SSE line each.
WHOLE_ANSWERS_FROM_PARALLEL = 64


class Settings(BaseSettings):
    """Machine-level configuration. Every field can be set as `CHUNKWISE_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="CHUNKWISE_", extra="ignore")

    ollama_host: str = Field(
        default_factory=lambda: os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST,
        description="Ollama base URL; `host`, `host:port` and `scheme://host:port` are accepted, "
        "as `OLLAMA_HOST` is by Ollama's client. Only http and https.",
    )
    openai_host: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL of the OpenAI-compatible server used with `--api openai` when --host is not "
        "given (llama-server's default port; `http://host:port/v1` is accepted too).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key for `--api openai` (env CHUNKWISE_API_KEY), sent as `Authorization: Bearer`. "
        "Read from the environment only: never a run parameter, never logged or written to the run directory.",
    )
    openai_stream: bool = Field(
        default=True,
        description="Stream `/v1/chat/completions` answers (with stream_options.include_usage). Turn off for a "
        "server that streams without reporting token usage.",
    )
    stream: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Read answers token by token (on: the read timeout bounds the silence between two tokens) or "
        "whole (off: it bounds the wait for the whole answer). auto: token by token below "
        "`WHOLE_ANSWERS_FROM_PARALLEL` (64) requests in flight, whole answers from there, where reading one line "
        "per token costs the client more CPU than the rest of a request (`python -m bench.fast_engine --stream on` "
        "against the default). "
        "CHUNKWISE_OPENAI_STREAM=false also turns streaming off for --api openai.",
    )
    output_dir: Path = Field(
        default=Path("runs"),
        description="Directory under which each run gets `<output_dir>/<run_name>/`.",
    )
    runs_root: Path | None = Field(
        default=None,
        description="The directory outside which no run reads or writes its run directory: every run's output_dir "
        "(CLI, UI form, deployment) and every shard's run_dir must resolve inside it, symlinks followed. "
        "Empty: output_dir (CHUNKWISE_OUTPUT_DIR, default `runs`, relative to the working directory).",
    )
    inputs_root: Path | None = Field(
        default=None,
        description="The directory outside which no run reads its input file or system prompt file (symlinks "
        "followed). Empty: the working directory of the process running the flow.",
    )
    file_mode: Literal["private", "group"] = Field(
        default="private",
        description="Permissions of what chunkwise creates: private = directories 0700, files 0600 (process "
        "umask 077); group = 0750 / 0640 (umask 027), for a runs root shared by a group (e.g. on NFS).",
    )
    prefect_auth_file: Path | None = Field(
        default=None,
        description="File holding the Prefect server's basic-auth string (`user:password`); chunkwise sets "
        "PREFECT_API_AUTH_STRING (clients) and PREFECT_SERVER_API_AUTH_STRING (a server it starts) from it. "
        "Must not be readable by other users. Never pass the credential as a command-line argument.",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="TCP connect timeout per request, seconds.")
    read_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Longest silence tolerated while waiting for a response, seconds. A long "
        "generation on a loaded GPU can take minutes; Ollama aborts the generation when the client "
        "disconnects, so too short a value wastes GPU time.",
    )
    chunk_workers: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Prefect thread-pool workers, i.e. chunks in flight at once. Bounded because "
        "Prefect's default pool is unbounded (1,532 mapped chunks would mean 1,532 threads). The CLI "
        "raises it to `parallel` when that is larger (a conversation holds a worker).",
    )
    retry_base_delay_s: float = Field(
        default=1.0,
        ge=0,
        description="First backoff delay after a transient request failure, seconds; doubles per attempt.",
    )
    retry_max_delay_s: float = Field(
        default=30.0, ge=0, description="Longest backoff delay between request attempts, seconds."
    )
    busy_timeout_s: float = Field(
        default=900.0,
        ge=0,
        description="How long one request keeps retrying HTTP 503 'server busy' (Ollama's load queue is full: "
        "back-pressure, never one of max_attempts), seconds; then it is recorded failed (transient).",
    )
    chunk_retries: int = Field(
        default=8,
        ge=0,
        le=100,
        description="Prefect retries of a chunk task that failed transiently (e.g. Ollama down for a while); "
        "answered requests are never re-sent thanks to the ledger.",
    )
    chunk_retry_delay_s: float = Field(
        default=10.0, ge=0, description="First delay before a chunk retry, seconds; doubles per retry, with jitter."
    )
    parallel: int | None = Field(
        default=None, ge=1, le=1024,
        description="Distributed mode: this host's parallel slots (its OLLAMA_NUM_PARALLEL), set in its worker's "
        "environment; shards it runs use it instead of the run's --parallel.",
    )
    host_label: str | None = Field(
        default=None, description="Distributed mode: this host's name in the per-host statistics (set by "
        "`chunkwise worker` to its worker name); defaults to the machine's hostname.",
    )
    shard_lost_after_s: float = Field(
        default=30.0, gt=0, description="Distributed mode: seconds a shard run may stay Running with its shard lock "
        "free (its process gone, nobody left to report its end) before the parent marks it Crashed; a run Pending "
        "(its process never reported Running) gets 4 times as long.",
    )
    worker_notes: str | None = Field(
        default=None, description="Distributed mode: file (set by `chunkwise worker`) where a shard its host "
        "refused leaves the model and digest the run needs, so the worker stops polling until the host serves it.",
    )
    worker_turn: str | None = Field(
        default=None, description="Distributed mode: the host's sending-turn lock file (set by `chunkwise worker`); "
        "a shard started ahead waits for it before it sends (chunkwise/cluster/turn.py). Empty: no waiting.",
    )
    gpu_sample_interval_s: float = Field(default=1.0, gt=0, description="GPU sampler period, seconds.")
    stop_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="On Ctrl-C/SIGTERM, how long in-flight requests may finish before the run exits, seconds.",
    )


    def runs_root_path(self) -> Path:
        """The runs root, resolved (symlinks followed) against the working directory."""
        return (self.runs_root or self.output_dir).resolve()

    def inputs_root_path(self) -> Path:
        """The inputs root, resolved (symlinks followed) against the working directory."""
        return (self.inputs_root or Path.cwd()).resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings, read from the environment on first use and cached for the process."""
    return Settings()
