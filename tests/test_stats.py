"""stats.json's figures (chunkwise.results.stats.compute_stats), computed from a small results file whose
numbers are worked out by hand, and the manifest comparison that decides whether a run may resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from chunkwise.results.stats import compute_stats
from chunkwise.run.manifest import BINDING_KEYS, differences
from chunkwise.store.records import OUTCOME_SCHEMA, FailureClass, Status, outcome

MS = 1_000_000  # ns


def write_results(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist([outcome(**r) for r in rows], schema=OUTCOME_SCHEMA), path)
    return path


def ok(row: int, latency_ms: int, *, attempts: int = 1, load_ms: int = 0) -> dict[str, Any]:
    return {"_row": row, "status": Status.OK, "prompt_eval_count": 100, "eval_count": 20,
            "eval_duration_ns": 200 * MS, "total_duration_ns": 300 * MS, "latency_ns": latency_ms * MS,
            "attempts": attempts, "load_duration_ns": load_ms * MS, "chunk": 0}


ROWS = [
    ok(0, 100, load_ms=1500),
    ok(1, 200, attempts=3),
    ok(2, 300),
    ok(3, 400, load_ms=120),
    {"_row": 4, "status": Status.FAILED, "error_class": FailureClass.TRANSIENT, "attempts": 6, "chunk": 1,
     "latency_ns": 9_000 * MS},
    {"_row": 5, "status": Status.FAILED, "error_class": FailureClass.INVALID_OUTPUT, "attempts": 3, "chunk": 1},
    {"_row": 6, "status": Status.REJECTED, "error_class": FailureClass.CONTEXT_TRUNCATED, "chunk": 1},
]


def stats_for(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"mode": "independent", "system_prompt": "s" * 400, "chars_per_token": 4.0,
                            "active_seconds": 2.0, "chunks": 2}
    return compute_stats(write_results(tmp_path / "results.parquet", ROWS), **(args | overrides))


def test_request_counts_reconcile_and_failures_are_counted_by_class(tmp_path: Path) -> None:
    requests = stats_for(tmp_path)["requests"]
    assert (requests["total"], requests["succeeded"], requests["failed"], requests["rejected"]) == (7, 4, 2, 1)
    assert requests["reconciles"] is True
    assert requests["failed_by_class"] == {"transient": 1, "context_truncated": 0, "output_truncated": 0,
                                           "invalid_output": 1, "incomplete": 0, "fatal": 0}


def test_tokens_latency_throughput_retries_and_loads(tmp_path: Path) -> None:
    stats = stats_for(tmp_path)
    assert stats["tokens"]["prompt_evaluated"] == 400 and stats["tokens"]["generated"] == 80
    # latency percentiles over the answered requests only (the failed one's 9 s is left out), nearest rank
    assert stats["latency_ms"] == {"p50": 300.0, "p95": 400.0, "p99": 400.0, "mean": 250.0}
    # 6 answered or failed requests in 2 s; 80 tokens in 2 s; the server decoded 80 tokens in 4 x 200 ms
    assert stats["throughput"] == {"active_seconds": 2.0, "requests_per_s": 3.0, "generated_tokens_per_s": 40.0,
                                   "server_decode_tokens_per_s": 100.0}
    # attempts beyond the first; rejected never sent
    assert stats["retries"] == {"request_retries": 2 + 5 + 2, "conversation_turns_retried_after_trimming": 0}
    assert stats["model_load"] == {"load_duration_max_s": 1.5, "requests_with_load_over_100ms": 2}
    assert (stats["chunks"], stats["mode"]) == (2, "independent")


def test_system_prompt_savings_count_conversation_starts(tmp_path: Path) -> None:
    # 400 characters at 4 per token: 100 tokens, carried by each of the 6 sent requests in independent mode
    independent = stats_for(tmp_path)["tokens"]["system_prompt_savings"]
    assert independent == {"naive_tokens": 600, "mode_tokens": 600, "saved_pct": 0.0,
                           "basis": "every request carries it"}
    conversation = stats_for(tmp_path, mode="conversation", conversation_starts=3)["tokens"]
    assert conversation["system_prompt_savings"] == {"naive_tokens": 600, "mode_tokens": 300, "saved_pct": 50.0,
                                                     "basis": "conversation starts"}
    without_starts = stats_for(tmp_path, mode="conversation")["tokens"]["system_prompt_savings"]
    assert without_starts["mode_tokens"] == 200  # one start per chunk when the starts are not known


def test_extra_sections_merge_into_existing_ones_and_add_new_ones(tmp_path: Path) -> None:
    stats = stats_for(tmp_path, extra={"retries": {"chunk_task_retries_this_session": 1}, "gpu": {"samples": 3}})
    assert stats["retries"] == {"request_retries": 9, "conversation_turns_retried_after_trimming": 0,
                                "chunk_task_retries_this_session": 1}
    assert stats["gpu"] == {"samples": 3}


MANIFEST = {"input_fingerprint": "abc", "api": "ollama", "model": "llama3.1:8b", "model_digest": "d1",
            "options": {"num_ctx": 8192}, "mode": "independent", "system_prompt_sha256": "s1", "format": None,
            "trim_threshold": 0.875, "chars_per_token": 4.0, "chunk_plan": {"chunk_size": 8},
            "server_version": "0.12.6", "code_version": "0.1.0"}


def test_manifest_comparison_binding_and_advisory() -> None:
    assert differences(MANIFEST, dict(MANIFEST)) == ([], [])
    changed = MANIFEST | {"model": "qwen2.5:7b", "options": {"num_ctx": 4096}, "server_version": "0.13.0"}
    binding, advisory = differences(MANIFEST, changed)
    assert binding == ["model: run has 'llama3.1:8b', now 'qwen2.5:7b'",
                       "options: run has {'num_ctx': 8192}, now {'num_ctx': 4096}"]
    assert advisory == ["server_version: run has '0.12.6', now '0.13.0'"]
    for key in BINDING_KEYS:  # every binding key refuses a resume on its own
        assert differences(MANIFEST, MANIFEST | {key: "other"})[0] != [], key


def test_manifest_written_before_a_key_existed_reads_it_as_its_default() -> None:
    old = {k: v for k, v in MANIFEST.items() if k != "api"}  # manifests before the OpenAI backend had no api
    assert differences(old, MANIFEST) == ([], [])
    assert differences(old, MANIFEST | {"api": "openai"})[0] == ["api: run has 'ollama', now 'openai'"]


def test_a_long_value_is_shortened_in_the_phrase() -> None:
    binding, _ = differences(MANIFEST, MANIFEST | {"format": {"type": "object", "description": "x" * 200}})
    assert len(binding) == 1 and binding[0].endswith("...") and len(binding[0]) < 200
