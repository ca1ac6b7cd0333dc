"""The end of a run: results.parquet, stats.json and the session's close in the manifest.

Everything here is derived from the run directory (checkpoints, manifest, ledgers), never from live
state of the process that ran the chunks: a re-run of a finished run, whose chunks all come from
their checkpoints, writes the same figures as the run that answered them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from chunkwise.errors import IncompleteRun
from chunkwise.inputs.scan import batch_file
from chunkwise.results.assemble import assemble_results, conversation_starts
from chunkwise.results.openai_files import write_batch_files
from chunkwise.results.sessions import session_figures
from chunkwise.results.stats import compute_stats
from chunkwise.results.statsdoc import StatsDoc
from chunkwise.run.context import RunContext
from chunkwise.run.manifest import now_iso
from chunkwise.store.checkpoint import load_checkpoint
from chunkwise.store.files import read_json, write_json_atomic
from chunkwise.store.layout import RunPaths
from chunkwise.store.records import FailureClass
from chunkwise.tokens import MAX_SAMPLES, Calibration, TokenEstimator


def close_session(paths: RunPaths) -> dict[str, Any]:
    manifest: dict[str, Any] = read_json(paths.manifest)
    if manifest.get("sessions"):
        manifest["sessions"][-1]["ended_at"] = now_iso()
    write_json_atomic(paths.manifest, manifest)
    return manifest


def calibration_from_results(results: Path, ctx: RunContext) -> Calibration:
    """The characters-per-token calibration the run's answers support: its answered requests in input
    order through a fresh estimator, as the run calibrated while sending (requests Ollama cut are
    left out: a cut count would make text look denser than it is)."""
    estimator = TokenEstimator(ctx.chars_per_token)
    answered = (pl.scan_parquet(results)
                .filter(pl.col("prompt_eval_count").is_not_null()
                        & (pl.col("error_class").is_null() | (pl.col("error_class") != FailureClass.CONTEXT_TRUNCATED)))
                .select("prompt_chars", "prompt_eval_count"))
    for batch in answered.collect().iter_slices(MAX_SAMPLES):
        for chars, count in batch.iter_rows():
            estimator.observe(chars or 0, count, ctx.params.num_ctx)
        if estimator.calibration.samples >= MAX_SAMPLES:
            break
    return estimator.calibration


def finish_run(ctx: RunContext, n_chunks: int, telemetry: dict[str, Any] | None = None) -> StatsDoc:
    paths = RunPaths(ctx.dir)
    checkpoints = [paths.checkpoint(i) for i in range(n_chunks)]
    missing = [p.name for p in checkpoints if load_checkpoint(p) is None]
    if missing:
        raise IncompleteRun(
            f"{len(missing)} chunks have no valid checkpoint ({', '.join(missing[:3])}...); resume the run"
        )
    assemble_results(paths, checkpoints)
    manifest = close_session(paths)
    sessions = session_figures(manifest, paths.ledger_dir)
    calibration = calibration_from_results(paths.results, ctx).as_dict()
    stats = compute_stats(
        paths.results,
        mode=ctx.params.mode,
        system_prompt=ctx.system_prompt,
        chars_per_token=calibration["chars_per_token"],
        active_seconds=sessions["active_seconds"],
        chunks=n_chunks,
        conversation_starts=conversation_starts(paths, checkpoints, ctx.system_prompt)
        if ctx.params.mode == "conversation" else None,
        extra={
            **(telemetry or {}),
            "sessions": sessions["sessions"],
            "truncation": {"calibration": calibration, "send_truncate_false": ctx.send_truncate_false,
                           "server_cuts_prompts": ctx.cuts_prompts},
            "server": {"api": ctx.params.api, "host": ctx.host, "server_version": ctx.server_version,
                       "is_simulator": ctx.is_simulator, "model": ctx.params.model, "model_digest": ctx.model_digest},
            "run": {"name": ctx.dir.name, "dir": str(ctx.dir), "sessions": len(manifest.get("sessions", [])),
                    "results": str(paths.results)},
        },
    )
    fmt = ctx.params.output_format
    if fmt == "openai" or (fmt is None and batch_file(ctx.params.input_path)):  # a batch file's answers as one
        write_batch_files(paths, model=ctx.params.model)
    write_json_atomic(paths.stats, stats)
    return stats
