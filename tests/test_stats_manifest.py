"""Direct tests of two pure functions the flow tests only reach through whole runs: the statistics
of a results table (`compute_stats`) and the manifest comparison that refuses or warns on a resume
(`differences`)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from chunkwise.results.stats import compute_stats
from chunkwise.run.manifest import differences, upgraded
from chunkwise.store.records import OUTCOME_SCHEMA, outcome


def write_results(path, records):
    pq.write_table(pa.Table.from_pylist(records, schema=OUTCOME_SCHEMA), path)
    return path


def answered(row, *, prompt=100, generated=10, latency_ms=100, attempts=1, load_ms=0, chunk=0):
    return outcome(_row=row, status="ok", response="x", prompt_eval_count=prompt, eval_count=generated,
                   total_duration_ns=2_000_000_000, eval_duration_ns=1_000_000_000, latency_ns=latency_ms * 1_000_000,
                   attempts=attempts, load_duration_ns=load_ms * 1_000_000, prompt_chars=400, chunk=chunk,
                   context_retries=0)


def test_compute_stats_counts_tokens_latency_and_failures(tmp_path):
    records = [answered(i, latency_ms=100 * (i + 1), attempts=1 + (i == 0), load_ms=900 if i == 0 else 0)
               for i in range(4)]
    records.append(outcome(_row=4, status="failed", error_class="output_truncated", prompt_eval_count=50,
                           eval_count=20, attempts=1, chunk=1, context_retries=0))
    records.append(outcome(_row=5, status="rejected", error_class="rejected", chunk=None, context_retries=0))
    path = write_results(tmp_path / "results.parquet", records)
    stats = compute_stats(path, mode="independent", system_prompt="s" * 400, chars_per_token=4.0,
                          active_seconds=10.0, chunks=2)
    r = stats["requests"]
    assert (r["total"], r["succeeded"], r["failed"], r["rejected"], r["reconciles"]) == (6, 4, 1, 1, True)
    assert r["failed_by_class"]["output_truncated"] == 1 and r["failed_by_class"]["transient"] == 0
    assert stats["tokens"]["prompt_evaluated"] == 450 and stats["tokens"]["generated"] == 60
    assert stats["throughput"]["requests_per_s"] == 0.5  # (4 answered + 1 failed) / 10 s
    assert stats["throughput"]["generated_tokens_per_s"] == 6.0
    # answered ones only; p50 is the nearest rank (index 1.5 of 4 rounds to 2)
    assert stats["latency_ms"]["p50"] == 300.0 and stats["latency_ms"]["mean"] == 250.0
    assert stats["retries"]["request_retries"] == 1
    assert stats["model_load"] == {"load_duration_max_s": 0.9, "requests_with_load_over_100ms": 1}
    # independent mode sends the system prompt (about 100 tokens) with each of the 5 sent requests
    savings = stats["tokens"]["system_prompt_savings"]
    assert (savings["naive_tokens"], savings["mode_tokens"], savings["saved_pct"]) == (500, 500, 0.0)


def test_conversation_mode_places_the_system_prompt_once_per_conversation(tmp_path):
    path = write_results(tmp_path / "results.parquet", [answered(i, chunk=i // 5) for i in range(10)])
    stats = compute_stats(path, mode="conversation", system_prompt="s" * 400, chars_per_token=4.0,
                          active_seconds=1.0, chunks=2, conversation_starts=3, extra={"requests": {"note": 1}})
    savings = stats["tokens"]["system_prompt_savings"]
    assert (savings["naive_tokens"], savings["mode_tokens"], savings["saved_pct"]) == (1000, 300, 70.0)
    assert stats["requests"]["note"] == 1 and stats["requests"]["total"] == 10  # extra merges into a section


MANIFEST = {"input_fingerprint": "f1", "api": "ollama", "model": "m", "model_digest": "d1",
            "options": {"num_ctx": 4096}, "mode": "conversation", "system_prompt_sha256": "s",
            "format": None, "trim_threshold": 0.8, "chars_per_token": 4.0, "chunk_plan": {"chunks": 3},
            "server_version": "0.12.6", "code_version": "1.0"}


def test_same_settings_resume_without_a_word():
    assert differences(MANIFEST, dict(MANIFEST)) == ([], [])


def test_a_changed_model_refuses_and_a_new_server_version_only_warns():
    binding, advisory = differences(MANIFEST, {**MANIFEST, "model_digest": "d2", "server_version": "0.13.0"})
    assert binding == ["model_digest: run has 'd1', now 'd2'"]
    assert advisory == ["server_version: run has '0.12.6', now '0.13.0'"]


def test_a_manifest_written_when_the_server_version_was_ollama_version_still_reads():
    old = {k: v for k, v in MANIFEST.items() if k != "server_version"} | {"ollama_version": "0.12.6"}
    assert differences(old, MANIFEST) == ([], [])
    assert differences(old, {**MANIFEST, "server_version": "0.13.0"})[1] == [
        "server_version: run has '0.12.6', now '0.13.0'"]
    assert upgraded(old) == MANIFEST  # what a resume writes back: today's name only
    assert upgraded(MANIFEST) == MANIFEST


def test_a_manifest_written_before_the_api_key_existed_means_ollama():
    old = {k: v for k, v in MANIFEST.items() if k != "api"}
    assert differences(old, MANIFEST) == ([], [])
    binding, _ = differences(old, {**MANIFEST, "api": "openai"})
    assert binding == ["api: run has 'ollama', now 'openai'"]


def test_long_values_are_shortened_in_the_message():
    binding, _ = differences(MANIFEST, {**MANIFEST, "options": {"num_ctx": 4096, "stop": ["x" * 200]}})
    assert len(binding) == 1 and binding[0].endswith("...") and len(binding[0]) < 200
