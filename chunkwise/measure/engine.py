"""`chunkwise measure --local-engine`: memory against context on llama-server, one start per context.

llama-server fixes its context at start (`-c`, split across `-np` slots) and reserves the whole KV
cache then; no request can change it (unlike Ollama's per-request `num_ctx`, which reloads the
model). So the only sound way to measure memory against context is to restart the engine for
each context: measure starts the local llama-server (`chunkwise.harness.llama_server.server`) with
`-c num_ctx x parallel -np parallel` for each `num_ctx` (tokens per slot), reads memory right after
it is ready (the reservation at load) and again after one answer to a prompt of the requested
size. Memory is the server process's RSS without a GPU, NVML "used" with one.

The fit of memory at load against num_ctx is compared with the KV formula for llama-server
(`chunkwise.ollama.kv`, engine "llama-server"), read from the GGUF's own metadata
(`chunkwise.openai.gguf`): only the global layers grow with the context; sliding-window layers
(Gemma 3: 15 of 18) hold a fixed `window + n_ubatch` cells per slot, which lands in the intercept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chunkwise.gpu.sampler import GpuSampler
from chunkwise.harness.llama_server.http import post_json
from chunkwise.harness.llama_server.paths import MODEL_ALIAS, EnginePaths, engine_paths
from chunkwise.harness.llama_server.server import EngineStartError, running_engine
from chunkwise.measure.fit import fit_line, recommend_num_ctx
from chunkwise.measure.output import write_outputs
from chunkwise.measure.prompt import build_prompt
from chunkwise.measure.report import SOURCE_NVML, SOURCE_RSS, MeasureReport, MeasureRow
from chunkwise.ollama.kv import ModelInfoError, kv_mib_per_token, kv_reserved_bytes, training_context
from chunkwise.openai.gguf import read_metadata
from chunkwise.tokens import DEFAULT_CHARS_PER_TOKEN
from chunkwise.units import MIB

ENGINE = "llama-server"
#: Contexts per slot (tokens) measured on the engine when none are given: all above Gemma 3's
#: window + ubatch (1024), where the sliding-window layers no longer grow.
DEFAULT_ENGINE_CONTEXTS = (2048, 4096, 8192, 16384)
CHAT_TIMEOUT_S = 900.0


def _mem_total_mib() -> float | None:
    """MemTotal of /proc/meminfo in MiB (the capacity of an RSS measurement)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _chat(url: str, messages: list[dict[str, str]], num_predict: int) -> tuple[int, dict[str, Any]]:
    """One non-streamed /v1/chat/completions; (HTTP status, JSON body). `cache_prompt: false` so
    every prompt is evaluated whole (a llama.cpp extension, tools/server/README.md)."""
    body = {"model": MODEL_ALIAS, "messages": messages, "max_tokens": num_predict, "temperature": 0, "seed": 42,
            "cache_prompt": False}
    return post_json(url + "/v1/chat/completions", body, CHAT_TIMEOUT_S)


def _measure_one(engine: Any, row: MeasureRow, target: int, num_predict: int, cpt: float,
                 sampler: GpuSampler, source: str) -> float | None:
    """Read memory at load, send one prompt of ~target tokens, read memory again. Returns the
    calibrated characters per token, or None when the row failed."""
    row.load_s = round(engine.ready_s or 0.0, 3)
    row.rss_load_mib = round(engine.rss_mib(), 1)
    reading = sampler.read_now()
    row.load_mib = round(reading["used_mib"], 1) if source == SOURCE_NVML and reading else row.rss_load_mib
    for _ in range(2):  # a too-long estimate is refused (HTTP 400 with n_prompt_tokens): resize once
        prompt = build_prompt(row.num_ctx, target, exact=False, chars_per_token=cpt, calibrated=cpt !=
                              DEFAULT_CHARS_PER_TOKEN)
        row.prompt_tokens_expected, row.prompt_chars = prompt.expected_tokens, prompt.chars
        row.token_count_method = prompt.method
        sampler.begin_window()
        status, body = _chat(engine.url, prompt.messages, num_predict)
        error = body.get("error") or {}
        if status == 400 and error.get("type") == "exceed_context_size_error" and error.get("n_prompt_tokens"):
            cpt = prompt.chars / int(error["n_prompt_tokens"])
            continue
        break
    if status != 200:
        row.status, row.note = "failed", f"HTTP {status}: {str(error.get('message') or body)[:200]}"
        return None
    usage, timings = body.get("usage") or {}, body.get("timings") or {}
    row.prompt_eval_count, row.eval_count = usage.get("prompt_tokens"), usage.get("completion_tokens")
    row.prefill_tok_s = round(timings["prompt_per_second"], 1) if timings.get("prompt_per_second") else None
    row.decode_tok_s = round(timings["predicted_per_second"], 1) if timings.get("predicted_per_second") else None
    row.rss_mib = round(engine.rss_mib(), 1)
    reading = sampler.read_now()
    if reading is not None:
        row.nvml_used_mib = round(reading["used_mib"], 1)
        peak = sampler.window_peak_mib()
        row.nvml_peak_mib = round(peak, 1) if peak is not None else None
    row.vram_mib = row.nvml_used_mib if source == SOURCE_NVML else row.rss_mib
    # llama-server refuses a prompt over the slot's context (HTTP 400 exceed_context_size_error with
    # n_prompt_tokens and n_ctx, tools/server/server-task.cpp) instead of cutting it, so the
    # estimate's error is no sign of a cut; only a count that fills the slot is.
    if row.prompt_eval_count is None or row.prompt_eval_count >= row.num_ctx - 1:
        row.truncated = True
        row.truncation_reason = f"prompt_tokens {row.prompt_eval_count} fills the slot context {row.num_ctx}"
    return prompt.chars / row.prompt_eval_count if row.prompt_eval_count else cpt


def run_engine_measurement(
    contexts: list[int],
    out_dir: Path,
    *,
    model: Path | None = None,
    parallel: int = 1,
    num_predict: int = 32,
    prompt_tokens: int | None = None,
    kv_cache_type: str = "f16",
    paths: EnginePaths | None = None,
    sampler_factory: Callable[[Path], GpuSampler] | None = None,
    sample_interval_s: float = 1.0,
    extra: Sequence[str] = (),
) -> MeasureReport:
    """Measure llama-server's memory at each per-slot context in `contexts` (one start each) and
    write measure.md/.csv/.png/.json into `out_dir`.

    `extra` are more llama-server flags (e.g. `-ngl 999` to offload every layer to a GPU). `model`
    is a GGUF (default: the Gemma 3 270M of `make engine`); `prompt_tokens` the size of the
    prompt sent after load (default: nearly the slot's context, which proves the context is usable
    but costs prefill time; the reservation does not depend on it). Raises EngineStartError when the
    engine is not set up.
    """
    if parallel < 1 or num_predict < 1:
        raise ValueError(f"parallel and num_predict must be >= 1; got {parallel} and {num_predict}")
    if not contexts or any(int(c) < 256 for c in contexts):
        raise ValueError(f"contexts must be at least 256 tokens per slot; got {contexts!r}")
    paths = paths or engine_paths()
    model = Path(model) if model is not None else paths.model
    if not model.is_file():
        raise EngineStartError(f"model not found at {model}: run `make engine` or pass a GGUF file")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if sampler_factory is None:
        sampler_factory = lambda d: GpuSampler(d, sample_interval_s)  # noqa: E731
    info = read_metadata(model)
    notes = [f"llama-server restarted for each context (its context is fixed at start): -c num_ctx x {parallel} "
             f"-np {parallel}; model {model}"]
    context_length = training_context(info)
    try:
        per_slot: float | None = kv_mib_per_token(info, kv_cache_type, ENGINE)
    except ModelInfoError as exc:
        per_slot = None
        notes.append(f"no KV formula: {exc}")
    extra = list(extra)
    if kv_cache_type != "f16":  # a quantised V cache needs flash attention in llama.cpp
        extra += ["-ctk", kv_cache_type, "-ctv", kv_cache_type, "-fa", "on"]
    if extra:
        notes.append(f"extra llama-server flags: {' '.join(extra)}")
    sampler = sampler_factory(out_dir)
    sampler.start()
    source = SOURCE_NVML if sampler.available else SOURCE_RSS
    if not sampler.available:
        notes.append(f"NVML unavailable ({sampler.reason}): memory is the llama-server process RSS")
    rows: list[MeasureRow] = []
    cpt = DEFAULT_CHARS_PER_TOKEN
    try:
        for num_ctx in sorted({int(c) for c in contexts}):
            row = MeasureRow(num_ctx)
            rows.append(row)
            if per_slot is not None:
                row.formula_kv_mib = round(kv_reserved_bytes(info, num_ctx, parallel, kv_cache_type, ENGINE) / MIB, 3)
            if context_length and num_ctx > context_length:
                row.status, row.note = "skipped", f"above the model's context_length {context_length}"
                continue
            target = prompt_tokens or num_ctx - num_predict - max(16, num_ctx // 20)
            log = out_dir / f"llama-server-{num_ctx}.log"
            try:
                with running_engine(parallel, num_ctx * parallel, log_path=log, paths=paths, model=model,
                                    extra=extra) as engine:
                    got = _measure_one(engine, row, target, num_predict, cpt, sampler, source)
            except EngineStartError as exc:
                row.status, row.note = "failed", f"llama-server did not start: {str(exc).splitlines()[0]}"
                continue
            cpt = got or cpt
    finally:
        gpu = sampler.stop()

    fit_rows = [r for r in rows if r.status == "ok" and r.load_mib is not None]
    fit = fit_line([r.num_ctx for r in fit_rows], [r.load_mib or 0.0 for r in fit_rows])
    after = [r for r in fit_rows if r.vram_mib is not None]
    fit_after = fit_line([r.num_ctx for r in after], [r.vram_mib or 0.0 for r in after])
    for r in fit_rows:
        r.in_fit = fit is not None
    formula = per_slot * parallel if per_slot is not None else None
    rel = (fit.slope_mib_per_token - formula) / formula if fit and formula else None
    if source == SOURCE_NVML:
        capacity, cap_source = sum(g["total_mib"] for g in gpu["gpus"]), "NVML total memory of all GPUs"
    else:
        capacity, cap_source = _mem_total_mib(), "MemTotal of this machine (RAM)"
    recommendation = recommend_num_ctx(fit, capacity, cap_source, parallel=parallel, context_length=context_length,
                                       max_measured=max((r.num_ctx for r in fit_rows), default=None))
    report = MeasureReport(
        model=str(info.get("general.name") or model.name), host="127.0.0.1 (started by measure)",
        server_version=f"llama-server from llama-cpp-python {paths.server_dir.name.split('-')[2]}",
        is_simulator=False, parallel=parallel, kv_cache_type=kv_cache_type, num_predict=num_predict,
        vram_source=source, rows=rows, fit=fit, fit_ps=None, fit_nvml=fit_after if source == SOURCE_NVML else None,
        formula_mib_per_token_per_slot=per_slot, formula_mib_per_token=formula, relative_difference=rel,
        recommendation=recommendation, context_length=context_length, gpu=gpu, notes=notes, warnings=[],
        api="openai", memory_at_load=True, fit_after=fit_after,
    )
    write_outputs(report, out_dir)
    return report
