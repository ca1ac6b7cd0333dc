"""One context of `chunkwise measure` (`chunkwise.measure.run`): load the model with it by a chat
whose prompt nearly fills it, then read memory two ways (NVML on this machine, Ollama's /api/ps) and
check the prompt was not silently truncated."""

from __future__ import annotations

from typing import Any

from chunkwise.backend import Backend, ChatOptions, ChatRequest
from chunkwise.errors import ConfigError, ContextExceeded, LLMError, ModelNotFound, ServerUnavailable
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.measure.fit import truncation_check
from chunkwise.measure.report import MeasureRow
from chunkwise.units import MIB

#: Ollama's `keep_alive` for each measuring request: long enough for the /api/ps read after each answer.
#: The only request field sent besides the options: no `truncate: false`, because measuring must see
#: what the server does with a prompt at a context it may not have loaded (a cut shows as truncation).
EXTRAS = {"keep_alive": "10m"}


def _rate(count: int | None, duration_ns: int) -> float | None:
    return round(count / duration_ns * 1e9, 1) if count and duration_ns > 0 else None


def measure_one(backend: Backend, client: Any, model: str, row: MeasureRow, prompt: Any, sampler: GpuSampler,
                num_predict: int, warnings: list[str]) -> Any:
    """Load `row.num_ctx` with one chat and read memory after it (NVML: the whole reading window's
    peak too; /api/ps: size, size_vram, context_length), filling `row`; the chat's result, or None
    when this context failed (recorded in `row`). Errors that end the whole measurement propagate."""
    sampler.begin_window()
    options = ChatOptions(row.num_ctx, num_predict, temperature=0, seed=42)
    try:
        result = client.chat(ChatRequest(model, prompt.messages, options, extras=EXTRAS))
    except (ModelNotFound, ServerUnavailable, ConfigError):
        raise  # nothing else can be measured either
    except ContextExceeded as exc:
        row.status, row.truncated = "failed", True
        row.truncation_reason = row.note = f"the server refused the prompt as too long: {exc}"
        return None
    except LLMError as exc:
        row.status, row.note = "failed", f"request failed: {exc}"
        return None
    reading = sampler.read_now()
    if reading is not None:
        row.nvml_used_mib = round(reading["used_mib"], 1)
        peak = sampler.window_peak_mib()
        row.nvml_peak_mib = round(peak, 1) if peak is not None else None
    entry = backend.memory(client, model)  # the server's name rule finds it under any spelling of `model`
    if entry is None:
        row.note = "the model is not in /api/ps after its answer (unloaded, or another model evicted it)"
    else:
        row.ps_size_mib = int(entry.get("size") or 0) / MIB
        row.ps_size_vram_mib = int(entry.get("size_vram") or 0) / MIB
        row.ps_context_length = entry.get("context_length")
        warning = entry.get("spill_warning")
        if warning:
            row.spilled = True
            warnings.append(warning)
    row.prompt_eval_count, row.eval_count = result.prompt_eval_count, result.eval_count
    row.load_s = round(result.load_duration / 1e9, 3)
    row.prefill_tok_s = _rate(result.prompt_eval_count, result.prompt_eval_duration)
    row.decode_tok_s = _rate(result.eval_count, result.eval_duration)
    reason = truncation_check(prompt.expected_tokens, result.prompt_eval_count, row.num_ctx, prompt.tolerance,
                              row.ps_context_length)
    if reason:
        row.truncated, row.truncation_reason = True, reason
    return result
