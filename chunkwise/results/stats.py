"""Run statistics (`stats.json` and the Prefect artifact), computed from results.parquet.

Everything is derived from measured counts: Ollama's per-request metrics, the client's wall
times, the GPU sampler, `/api/ps`. Throughput divides by the run's active time (the sum of its
sessions, each ending at its last ledger line if it was killed: `chunkwise.results.sessions`), so a
resumed run's figures are neither flattered by a crashed session's lost time nor diluted by the time
the run spent stopped; `sessions` lists each session's own active time, requests and rate.

System-prompt savings compare the chosen mode with sending the system prompt in front of every
request and evaluating it each time. Conversation mode places it once per conversation (once per
chunk, plus a restart where a row brings its own system prompt); independent mode sends it with
every request, so its savings come only from Ollama's prefix cache, which shows in
`prompt_eval_duration`, not in token counts, and is reported as 0 here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import polars as pl

from chunkwise.results.statsdoc import StatsDoc
from chunkwise.store.records import FailureClass, Status
from chunkwise.tokens import estimate_tokens
from chunkwise.units import MIB


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def compute_stats(
    results_path: str | Path,
    *,
    mode: str,
    system_prompt: str,
    chars_per_token: float,
    active_seconds: float,
    chunks: int,
    conversation_starts: int | None = None,
    extra: dict[str, Any] | None = None,
) -> StatsDoc:
    """The statistics of `results_path` (see `chunkwise.results.statsdoc`); `extra` adds sections or merges
    into one (a dict into a dict)."""
    lf = pl.scan_parquet(results_path)
    ok = pl.col("status") == str(Status.OK)
    row = lf.select(
        pl.len().alias("total"),
        ok.sum().alias("succeeded"),
        (pl.col("status") == str(Status.FAILED)).sum().alias("failed"),
        (pl.col("status") == str(Status.REJECTED)).sum().alias("rejected"),
        pl.col("prompt_eval_count").sum().alias("prompt_tokens"),
        pl.col("eval_count").sum().alias("generated_tokens"),
        pl.col("eval_duration_ns").sum().alias("eval_ns"),
        pl.col("total_duration_ns").sum().alias("server_ns"),
        pl.col("latency_ns").filter(ok).quantile(0.50, "nearest").alias("p50"),
        pl.col("latency_ns").filter(ok).quantile(0.95, "nearest").alias("p95"),
        pl.col("latency_ns").filter(ok).quantile(0.99, "nearest").alias("p99"),
        pl.col("latency_ns").filter(ok).mean().alias("mean"),
        (pl.col("attempts") - 1).clip(lower_bound=0).sum().alias("request_retries"),
        pl.col("load_duration_ns").max().alias("load_max_ns"),
        (pl.col("load_duration_ns") >= 100_000_000).sum().alias("load_events"),
        (pl.col("status") != str(Status.REJECTED)).sum().alias("sent_requests"),
        pl.col("thinking").str.len_chars().sum().alias("thinking_chars"),
        (pl.col("thinking").str.len_chars() > 0).sum().alias("thinking_answers"),
        pl.col("context_retries").sum().alias("context_retries"),
    ).collect().row(0, named=True)
    by_class = (
        lf.filter(pl.col("status") == str(Status.FAILED)).group_by("error_class").len().collect().rows()
    )
    failed_by_class = {str(c): 0 for c in FailureClass} | {str(k): int(v) for k, v in by_class}

    system_tokens = estimate_tokens(len(system_prompt), chars_per_token) if system_prompt else 0
    sent = int(row["sent_requests"] or 0)
    starts = conversation_starts if conversation_starts is not None else chunks
    placements = starts if mode == "conversation" else sent
    naive = sent * system_tokens
    chosen = min(placements, sent) * system_tokens
    seconds = max(active_seconds, 1e-9)
    stats: StatsDoc = {
        "requests": {
            "total": row["total"], "succeeded": row["succeeded"], "failed": row["failed"],
            "rejected": row["rejected"], "failed_by_class": failed_by_class,
            "reconciles": row["total"] == row["succeeded"] + row["failed"] + row["rejected"],
        },
        "tokens": {
            "prompt_evaluated": int(row["prompt_tokens"] or 0),
            "generated": int(row["generated_tokens"] or 0),
            # Ollama counts a thinking model's trace inside eval_count ("generated") and reports no
            # separate count, so its share is estimated from the trace's characters.
            "thinking_tokens_estimated": estimate_tokens(int(row["thinking_chars"] or 0), chars_per_token),
            "answers_with_thinking": int(row["thinking_answers"] or 0),
            "system_prompt_tokens_estimated": system_tokens,
            "system_prompt_savings": {
                "naive_tokens": naive,
                "mode_tokens": chosen,
                "saved_pct": round(100.0 * (1 - chosen / naive), 2) if naive else 0.0,
                "basis": "conversation starts" if mode == "conversation" else "every request carries it",
            },
        },
        "throughput": {
            "active_seconds": round(active_seconds, 3),
            "requests_per_s": round((row["succeeded"] + row["failed"]) / seconds, 3),
            "generated_tokens_per_s": round(int(row["generated_tokens"] or 0) / seconds, 3),
            "server_decode_tokens_per_s": round(int(row["generated_tokens"] or 0) / (row["eval_ns"] / 1e9), 3)
            if row["eval_ns"] else None,
        },
        "latency_ms": {"p50": _ms(row["p50"]), "p95": _ms(row["p95"]), "p99": _ms(row["p99"]),
                       "mean": _ms(row["mean"])},
        "chunks": chunks,
        "retries": {"request_retries": int(row["request_retries"] or 0),
                    "conversation_turns_retried_after_trimming": int(row["context_retries"] or 0)},
        # Ollama's load_duration includes waiting for a load another request started, so the
        # longest one is the model's load time and the count shows how many requests waited on one.
        "model_load": {"load_duration_max_s": round((row["load_max_ns"] or 0) / 1e9, 3),
                       "requests_with_load_over_100ms": int(row["load_events"] or 0)},
        "mode": mode,
    }
    sections = cast(dict[str, Any], stats)  # the same dict, keyed by the names `extra` brings
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = {**sections[key], **value}
        else:
            sections[key] = value
    return stats


def stats_table(stats: StatsDoc) -> list[dict[str, str]]:
    """Rows for the Prefect table artifact: a flat `metric` / `value` view of the essentials."""
    r, t, th, lat = stats["requests"], stats["tokens"], stats["throughput"], stats["latency_ms"]
    gpu = stats.get("gpu") or {}
    vram = "unavailable: " + str(gpu.get("reason")) if not gpu.get("available", False) else ", ".join(
        f"GPU{g['index']} baseline {g['baseline_used_mib']:.0f} MiB, peak {g['peak_used_mib']:.0f} MiB"
        for g in gpu.get("gpus", [])
    )
    rows = [
        ("requests total / succeeded / failed / rejected",
         f"{r['total']} / {r['succeeded']} / {r['failed']} / {r['rejected']}"),
        ("failed by class", ", ".join(f"{k} {v}" for k, v in r["failed_by_class"].items() if v) or "none"),
        ("prompt tokens evaluated / generated", f"{t['prompt_evaluated']} / {t['generated']}"),
        ("requests/s, generated tokens/s", f"{th['requests_per_s']}, {th['generated_tokens_per_s']}"),
        ("sessions: active s, requests finished, requests/s",
         "; ".join(f"{i}: {x['active_seconds']} s, {x['requests_finished']}, {x['requests_per_s']}"
                   for i, x in enumerate(stats.get("sessions") or [], 1)) or "n/a"),
        ("latency p50 / p95 / p99 (ms)", f"{lat['p50']} / {lat['p95']} / {lat['p99']}"),
        ("chunks, request retries, chunk task retries",
         f"{stats['chunks']}, {stats['retries']['request_retries']}, "
         f"{stats['retries'].get('chunk_task_retries_this_session', 0)}"),
        ("model load time (s), requests that waited on a load",
         f"{stats['model_load']['load_duration_max_s']}, {stats['model_load']['requests_with_load_over_100ms']}"),
        ("VRAM", vram),
        ("system prompt savings",
         f"{t['system_prompt_savings']['saved_pct']}% ({t['system_prompt_savings']['basis']})"),
    ]
    rows += host_rows_table(stats)
    return [{"metric": k, "value": v} for k, v in rows]


def _host_ps(ps: dict[str, Any] | None) -> str:
    if not ps:
        return "/api/ps: model not loaded at the shards' ends"
    size, vram = ps.get("size"), ps.get("size_vram")
    if not isinstance(size, int) or not isinstance(vram, int):
        return f"/api/ps: {ps.get('name')} (no sizes)"
    text = (f"/api/ps: {ps.get('name')} {vram / MIB:.0f} of {size / MIB:.0f} MiB on the GPU, "
            f"context {ps.get('context_length')}")
    return text + (", CPU SPILL" if ps.get("cpu_spill") else "")


def host_rows_table(stats: StatsDoc) -> list[tuple[str, str]]:
    """Distributed mode: one artifact row per host (requests sent and answered, tokens, req/s over its
    busy time, busy s, GPU peak, `/api/ps` there, digest check) and a sum row that says whether the
    hosts' answered requests and tokens add up to the run's totals. Empty for a single-host run."""
    hosts = stats.get("hosts") or []
    if not hosts:
        return []
    rows = []
    for h in hosts:
        gpu = "no GPU seen" if h.get("gpu_peak_mib") is None else f"GPU peak {h['gpu_peak_mib']:.0f} MiB"
        last_spilled = (h.get("ollama_ps") or {}).get("cpu_spill")
        spill = " (a shard saw a CPU spill)" if h.get("cpu_spill") and not last_spilled else ""
        rows.append((f"host {h['host']}: requests sent / answered, tokens in / out, req/s, busy s, GPU, /api/ps, "
                     "digest",
                     f"{h['requests']} / {h['ok']}, {h['prompt_tokens']} / {h['output_tokens']}, {h['req_per_s']}, "
                     f"{h['busy_s']}, {gpu}, {_host_ps(h.get('ollama_ps'))}{spill}, digest {h.get('digest_check')}"))
    r, t = stats["requests"], stats["tokens"]
    ok = sum(h["ok"] for h in hosts)
    sums = (ok, sum(h["prompt_tokens"] for h in hosts), sum(h["output_tokens"] for h in hosts))
    totals = (r["succeeded"], t["prompt_evaluated"], t["generated"])
    verdict = "add up" if sums == totals else "DO NOT add up (a host's facts are missing or a request was re-sent)"
    rows.append(("hosts summed: answered, tokens in / out (run totals)",
                 f"{sums[0]}, {sums[1]} / {sums[2]} (run: {totals[0]}, {totals[1]} / {totals[2]}): {verdict}; "
                 f"requests sent {sum(h['requests'] for h in hosts)}, busy {sum(h['busy_s'] for h in hosts):.1f} s"))
    return rows
