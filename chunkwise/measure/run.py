"""`chunkwise measure`: what one context token really costs in GPU memory, measured on a server.

For each num_ctx the model is loaded with that context (a chat with `options.num_ctx`; Ollama
reloads when num_ctx changes: `needsReload` in `server/sched.go`) and sent a prompt that nearly fills it.
Then memory is read: NVML "used" on this machine's GPUs (`chunkwise.gpu.sampler`), Ollama's `/api/ps`
size / size_vram, and, for a server on this machine, its runner process's RSS (`chunkwise.measure.rss`).
The fit of memory against num_ctx (one line per batch tier, `chunkwise.measure.tiers`) gives the measured
MiB per context token, compared with the KV formula (`chunkwise.ollama.kv`, in the layout of the server's
version) times the parallel slots, and with the prediction that adds the compute graph's attention mask
(`chunkwise.measure.analysis`). The sampler measures the machine it runs on; a remote Ollama host needs
`chunkwise measure` run there, so for a non-loopback host the VRAM source is /api/ps.

Every prompt is checked for silent truncation (its `prompt_eval_count` against the tokens sent),
because a cut prompt is what made the 2025 seed measurement look free: VRAM was flat at one
num_ctx and the long prompts never reached the model.

The logic is here (the loop over contexts), in `reading` (one context: the chat, NVML and /api/ps),
`analysis` (source, rows, capacity, tiers, recommendation), `compare` (the slope held to the formula and
the prediction), `fit` / `tiers` / `prompt` (pure) and `output` (files);
`chunkwise.commands.measure` and `flows/measure.py` only call `run_measurement`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chunkwise.backend import Backend
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.measure.analysis import (
    Predictor,
    batch_of,
    capacity_of,
    cpu_only,
    fit_rows,
    mark_in_fit,
    recommend,
    take_cpu_only,
    tier_fit,
    tier_notes,
)
from chunkwise.measure.compare import compare
from chunkwise.measure.output import write_outputs
from chunkwise.measure.prompt import build_prompt
from chunkwise.measure.reading import measure_one
from chunkwise.measure.report import SOURCE_NVML, SOURCE_PS, SOURCE_PS_SIZE, MeasureReport, MeasureRow
from chunkwise.measure.rss import RSS_NOTE, model_path, runner_memory
from chunkwise.ollama import compute, kv
from chunkwise.ollama.kv import ModelInfoError
from chunkwise.servers import backend_for
from chunkwise.tokens import DEFAULT_CHARS_PER_TOKEN
from chunkwise.units import MIB


def measure_run_dir(output_dir: Path, model: str, now: datetime | None = None) -> Path:
    """`<output_dir>/measure-<model>-<UTC time>`: a fresh directory name for one measurement."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(output_dir) / f"measure-{re.sub(r'[^A-Za-z0-9._-]+', '_', model)}-{stamp}"


def headroom_tokens(num_ctx: int) -> int:
    """Tokens left unfilled besides num_predict: template tokens and estimate error (5 %, >= 16)."""
    return max(16, num_ctx // 20)


def is_local_host(url: str) -> bool:
    """Whether an Ollama URL points at this machine (so this machine's NVML sees its GPU)."""
    name = (urlsplit(url).hostname or "").lower()
    return name in ("localhost", "::1", "0.0.0.0") or name.startswith("127.") or name in (
        socket.gethostname().lower(), socket.getfqdn().lower())


def run_measurement(
    client: Any,
    model: str,
    contexts: list[int],
    out_dir: Path,
    *,
    parallel: int = 1,
    num_predict: int = 32,
    kv_cache_type: str = "f16",
    vram_mib: float | None = None,
    sampler_factory: Callable[[Path], GpuSampler] | None = None,
    backend: Backend | None = None,
) -> MeasureReport:
    """Measure `model` at each num_ctx in `contexts`; write measure.md/.csv/.png/.json into `out_dir`.

    `parallel` and `kv_cache_type` must be the server's OLLAMA_NUM_PARALLEL and OLLAMA_KV_CACHE_TYPE
    (Ollama has no per-request option for either; they only enter the formula). `vram_mib` is the
    memory the model may use on the Ollama host, needed for a recommendation when NVML cannot see
    that GPU. `backend` is the server kind's (`chunkwise.servers`; Ollama's by default: this loop loads the
    model per request, which a server that fixes its context at start cannot do). Raises `SetupError`
    (unreachable server, unknown model) or ConfigError when nothing can be measured.
    """
    if parallel < 1 or num_predict < 1:
        raise ValueError(f"parallel and num_predict must be >= 1; got {parallel} and {num_predict}")
    if not contexts or any(int(c) < 1 for c in contexts):
        raise ValueError(f"contexts must be positive token counts; got {contexts!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if sampler_factory is None:
        from chunkwise.settings import get_settings

        interval = get_settings().gpu_sample_interval_s
        sampler_factory = lambda d: GpuSampler(d, interval)  # noqa: E731
    notes: list[str] = []
    warnings: list[str] = []
    backend = backend or backend_for("ollama")
    facts = backend.inspect(client, model)
    is_sim, model_info, context_length = facts.is_simulator, dict(facts.model_info), facts.training_ctx
    engine = backend.kv_engine(facts.version)
    try:
        layout: kv.KVLayout | None = kv.kv_layout(model_info, kv_cache_type, engine)
    except ModelInfoError as exc:
        layout = None
        notes.append(f"no KV formula: {exc}")
    predictor = Predictor(layout, parallel)
    loaded_before = [m.get("name") for m in client.ps()]
    if loaded_before:
        notes.append(f"loaded before the measurement: {', '.join(map(str, loaded_before))}")

    sampler = sampler_factory(out_dir)
    sampler.start()
    local = is_local_host(getattr(client, "host", ""))
    source = SOURCE_NVML if sampler.available and local else SOURCE_PS
    if sampler.available and not local:
        notes.append(f"NVML works here but Ollama is at {client.host}: the sampler measures the machine it runs "
                     "on, so VRAM comes from /api/ps; run chunkwise measure on the Ollama host for GPU readings")
    elif not sampler.available:
        notes.append(f"NVML unavailable ({sampler.reason}): memory comes from /api/ps")
    runner_model = model_path(client, model) if local and not is_sim else ""
    rss_reason = ""

    rows: list[MeasureRow] = []
    cpt, calibrated = DEFAULT_CHARS_PER_TOKEN, False
    try:
        for num_ctx in sorted({int(c) for c in contexts}):
            row = MeasureRow(num_ctx)
            rows.append(row)
            if layout is not None:
                row.formula_kv_mib = round(kv.kv_reserved_bytes(model_info, num_ctx, parallel, kv_cache_type, engine,
                                                                 compute.runner_batch(facts.version, num_ctx, parallel,
                                                                                      context_length)) / MIB, 3)
            target = num_ctx - num_predict - headroom_tokens(num_ctx)
            skip = (f"above the model's context_length {context_length} (Ollama would clamp it)"
                    if context_length and num_ctx > context_length else "" if target >= 16 else
                    f"too small: num_predict {num_predict} + headroom leave no room for a prompt")
            if skip:
                row.status, row.note = "skipped", skip
                continue
            prompt = build_prompt(num_ctx, target, exact=is_sim, chars_per_token=cpt, calibrated=calibrated)
            row.prompt_tokens_expected, row.prompt_chars = prompt.expected_tokens, prompt.chars
            row.token_count_method = prompt.method
            result = measure_one(backend, client, model, row, prompt, sampler, num_predict, warnings)
            if result is None:
                continue
            if local and not is_sim:
                runner, rss_reason = runner_memory(client.host, runner_model)
                if runner is not None:
                    row.rss_mib, row.rss_peak_mib = round(runner.rss_mib, 1), round(runner.peak_mib, 1)
            if not is_sim and not row.truncated and result.prompt_eval_count:
                cpt, calibrated = prompt.chars / result.prompt_eval_count, True
    finally:
        gpu = sampler.stop()

    if source == SOURCE_PS and cpu_only(rows):
        source = SOURCE_PS_SIZE
        notes.append(take_cpu_only(rows, warnings))
    if rss_reason and not any(r.rss_mib for r in rows):
        notes.append(f"no runner RSS: {rss_reason}")
    fitted = fit_rows(rows, source, parallel)
    capacity, cap_source = capacity_of(source, gpu["gpus"], vram_mib, local, rows)
    for r in fitted:  # the batch Ollama ran the loaded context with: the reading's tier
        r.batch = batch_of(facts.version, r.ps_context_length or r.num_ctx, parallel, context_length, r.vram_mib,
                           capacity)

    tiers_ps = tier_fit(fitted, lambda r: r.ps_size_mib if source == SOURCE_PS_SIZE else r.ps_size_vram_mib)
    tiers_nvml = tier_fit(fitted, lambda r: r.nvml_used_mib)
    tiers = tiers_nvml if source == SOURCE_NVML else tiers_ps
    mark_in_fit(fitted, tiers)
    notes += tier_notes(tiers, predictor)
    fit_rss = tier_fit([r for r in fitted if r.batch == tiers.main_batch], lambda r: r.rss_mib).main
    if fit_rss is not None:
        notes.append(f"{RSS_NOTE} (RSS line: {fit_rss.slope_mib_per_token:.6f} MiB/token + "
                     f"{fit_rss.intercept_mib:.1f} MiB)")
    held = compare(tiers.main, predictor, tiers.main_batch, kv_cache_type)
    notes += held.notes

    measured = [r.num_ctx for r in fitted if r.in_fit]
    recommendation = recommend(tiers, predictor, capacity, cap_source, version=facts.version, parallel=parallel,
                               context_length=context_length, max_measured=max(measured, default=None))
    report = MeasureReport(
        model=model, host=getattr(client, "host", ""), server_version=facts.version,
        is_simulator=is_sim, parallel=parallel, kv_cache_type=kv_cache_type, num_predict=num_predict,
        vram_source=source, rows=rows, fit=tiers.main, fit_ps=tiers_ps.main, fit_nvml=tiers_nvml.main,
        formula_mib_per_token_per_slot=predictor.kv_per_slot, formula_mib_per_token=held.formula,
        relative_difference=held.relative_difference, recommendation=recommendation, context_length=context_length,
        gpu=gpu, notes=notes, warnings=warnings, kv_engine=engine, predicted_mib_per_token=held.predicted,
        mask_mib_per_token=held.mask, predicted_relative_difference=held.predicted_relative_difference,
        batch=tiers.main_batch, tiers=[t.as_dict() for t in tiers.tiers], fit_rss=fit_rss,
    )
    write_outputs(report, out_dir)
    return report
