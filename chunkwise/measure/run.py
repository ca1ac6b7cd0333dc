"""`chunkwise measure`: what one context token really costs in GPU memory, measured on a server.

For each num_ctx the model is loaded with that context (a chat with `options.num_ctx`; Ollama
reloads when num_ctx changes: `needsReload` in `server/sched.go`) and sent a prompt that nearly fills it.
Then memory is read two ways: NVML "used" on this machine's GPUs (`chunkwise.gpu.sampler`) and Ollama's
`/api/ps` size / size_vram. The fit of memory against num_ctx gives the measured MiB per context
token, compared with the KV formula (`chunkwise.ollama.kv`) times the parallel slots. The sampler
measures the machine it runs on; a remote Ollama host needs `chunkwise measure` run there, so for
a non-loopback host the VRAM source is /api/ps.

Every prompt is checked for silent truncation (its `prompt_eval_count` against the tokens sent),
because a cut prompt is what made the 2025 seed measurement look free: VRAM was flat at one
num_ctx and the long prompts never reached the model.

The logic is here (the loop over contexts and the fit), in `reading` (one context: the chat, NVML and
/api/ps), `fit` / `prompt` (pure) and `output` (files);
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
from chunkwise.measure.fit import Fit, fit_line, recommend_num_ctx
from chunkwise.measure.output import write_outputs
from chunkwise.measure.prompt import build_prompt
from chunkwise.measure.reading import measure_one
from chunkwise.measure.report import SOURCE_NVML, SOURCE_PS, MeasureReport, MeasureRow
from chunkwise.ollama import compute
from chunkwise.ollama.kv import BYTES_PER_ELEMENT, ModelInfoError, kv_mib_per_token
from chunkwise.servers import backend_for
from chunkwise.tokens import DEFAULT_CHARS_PER_TOKEN


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


def explain_difference(slope: float, per_slot: float, parallel: int, kv_cache_type: str) -> str | None:
    """A likely cause when the measured slope is not the formula's (within 1 %): another number of
    slots with the given cache type, or another cache type with the given slots."""
    per_element = per_slot / BYTES_PER_ELEMENT[kv_cache_type]
    guesses = [(slots, kv_cache_type) for slots in range(1, 17) if slots != parallel]
    guesses += [(parallel, cache) for cache in BYTES_PER_ELEMENT if cache != kv_cache_type]
    for slots, cache in guesses:
        guess = per_element * BYTES_PER_ELEMENT[cache] * slots
        if abs(slope - guess) <= 0.01 * guess:
            return (f"the measured slope matches {slots} slot(s) of a {cache} cache: check the server's "
                    f"OLLAMA_NUM_PARALLEL and OLLAMA_KV_CACHE_TYPE and pass --parallel / --kv-cache-type")
    return None


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
    try:
        per_slot: float | None = kv_mib_per_token(model_info, kv_cache_type)
    except ModelInfoError as exc:
        per_slot = None
        notes.append(f"no KV formula: {exc}")
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
        notes.append(f"NVML unavailable ({sampler.reason}): VRAM comes from /api/ps size_vram")

    rows: list[MeasureRow] = []
    cpt, calibrated = DEFAULT_CHARS_PER_TOKEN, False
    try:
        for num_ctx in sorted({int(c) for c in contexts}):
            row = MeasureRow(num_ctx)
            rows.append(row)
            if per_slot is not None:
                row.formula_kv_mib = round(per_slot * num_ctx * parallel, 3)
            if context_length and num_ctx > context_length:
                row.status = "skipped"
                row.note = f"above the model's context_length {context_length} (Ollama would clamp it)"
                continue
            target = num_ctx - num_predict - headroom_tokens(num_ctx)
            if target < 16:
                row.status = "skipped"
                row.note = f"too small: num_predict {num_predict} + headroom leave no room for a prompt"
                continue
            prompt = build_prompt(num_ctx, target, exact=is_sim, chars_per_token=cpt, calibrated=calibrated)
            row.prompt_tokens_expected, row.prompt_chars = prompt.expected_tokens, prompt.chars
            row.token_count_method = prompt.method
            result = measure_one(backend, client, model, row, prompt, sampler, num_predict, warnings)
            if result is None:
                continue
            row.vram_mib = row.nvml_used_mib if source == SOURCE_NVML else row.ps_size_vram_mib
            if not is_sim and not row.truncated and result.prompt_eval_count:
                cpt, calibrated = prompt.chars / result.prompt_eval_count, True
    finally:
        gpu = sampler.stop()

    def clamped(r: MeasureRow) -> bool:
        """The server did not load the requested context. /api/ps shows num_ctx, or num_ctx x parallel
        where the scheduler multiplied it into the runner's options (Ollama 0.2-0.9), or nothing (< 0.10)."""
        return bool(r.ps_context_length) and r.ps_context_length not in (r.num_ctx, r.num_ctx * parallel)

    fit_rows = [r for r in rows if r.status == "ok" and not r.spilled and not clamped(r)]
    for r in rows:
        if r.status == "ok" and clamped(r):
            r.note = (r.note + "; " if r.note else "") + (
                f"the server loaded context_length {r.ps_context_length}, not the requested {r.num_ctx}: left out "
                "of the fit")
        if r.spilled:
            r.note = (r.note + "; " if r.note else "") + "spilled to CPU: left out of the fit"
    if source == SOURCE_NVML:
        capacity, cap_source = sum(g["total_mib"] for g in gpu["gpus"]), "NVML total memory of all GPUs"
    elif vram_mib:
        capacity, cap_source = float(vram_mib), "--vram-mib"
    else:
        spilled = [r.ps_size_vram_mib for r in rows if r.spilled and r.ps_size_vram_mib]
        capacity = max(spilled) if spilled else None
        cap_source = ("largest size_vram of a spilled load (what Ollama could place on the GPU)" if spilled
                      else "no NVML reading of the Ollama host's GPU and no --vram-mib given")
    # Ollama v0.30+ adds stepped compute buffers for its automatic num_batch (chunkwise.ollama.compute).
    buffers = compute.applies(facts.version)

    def fit_without_buffers(readings: list[tuple[MeasureRow, float]]) -> Fit | None:
        """The line of weights + KV: each reading less the compute buffers Ollama would have chosen for
        the context /api/ps says it loaded, given the line itself (a few rounds from the raw fit; a single
        reading cannot tell a step from memory pressure that lowered it)."""
        xs = [r.num_ctx for r, _ in readings]
        fit, steps = fit_line(xs, [y for _, y in readings]), None
        for _round in range(5):
            if not buffers or fit is None:
                break
            new_steps = [compute.chosen_surcharge_mib(r.ps_context_length, parallel, fit.predict(r.num_ctx), capacity,
                                                      context_length) if r.ps_context_length else 0.0
                         for r, _ in readings]
            if new_steps == steps:
                break
            steps = new_steps
            fit = fit_line(xs, [y - s for (_, y), s in zip(readings, steps, strict=True)])
        return fit

    fit_ps = fit_without_buffers([(r, float(r.ps_size_vram_mib)) for r in fit_rows if r.ps_size_vram_mib is not None])
    fit_nvml = fit_without_buffers([(r, float(r.nvml_used_mib)) for r in fit_rows if r.nvml_used_mib is not None])
    fit = fit_nvml if source == SOURCE_NVML else fit_ps
    compute_term = None
    if buffers and fit is not None:
        def compute_term(n: int) -> float:
            return compute.chosen_surcharge_mib(n, parallel, fit.predict(n), capacity, context_length)
    for r in fit_rows:
        r.in_fit = r.vram_mib is not None and fit is not None

    formula = per_slot * parallel if per_slot is not None else None
    rel = (fit.slope_mib_per_token - formula) / formula if fit and formula else None
    if fit and per_slot and rel is not None and abs(rel) > 0.02 and fit.slope_mib_per_token > 0:
        hint = explain_difference(fit.slope_mib_per_token, per_slot, parallel, kv_cache_type)
        notes.append(hint or "the measured slope differs from the formula by more than 2%: on a real GPU, "
                     "compute buffers that grow with num_ctx add to the KV cache (see the NVML and /api/ps fits)")

    measured = [r.num_ctx for r in fit_rows]
    recommendation = recommend_num_ctx(fit, capacity, cap_source, parallel=parallel,
                                       context_length=context_length, max_measured=max(measured, default=None),
                                       compute_mib=compute_term)
    report = MeasureReport(
        model=model, host=getattr(client, "host", ""), server_version=facts.version,
        is_simulator=is_sim, parallel=parallel, kv_cache_type=kv_cache_type, num_predict=num_predict,
        vram_source=source, rows=rows, fit=fit, fit_ps=fit_ps, fit_nvml=fit_nvml,
        formula_mib_per_token_per_slot=per_slot, formula_mib_per_token=formula, relative_difference=rel,
        recommendation=recommendation, context_length=context_length, gpu=gpu, notes=notes, warnings=warnings,
    )
    write_outputs(report, out_dir)
    return report
