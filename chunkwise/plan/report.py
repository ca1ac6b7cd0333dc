"""The run plan `chunkwise plan` prints: what an operator checks before a run.

`build_plan` adds to the chunking (`chunkwise.plan.chunks`): the KV cache Ollama reserves at load
(`chunkwise.ollama.kv`, num_ctx x parallel tokens: `llm/server.go` `KvSize: opts.NumCtx * numParallel` in v0.20.0,
`-c num_ctx x parallel` in `llm/llama_server.go` since v0.30), whether it fits the free
VRAM, which num_ctx and parallel suit independent mode, the requests that cannot fit the context,
and an ETA when prefill/decode rates are known; `Plan.as_dict()` and `Plan.render()` give its JSON
and text (`chunkwise.plan.figures`, `chunkwise.plan.render`).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from chunkwise.inputs.summary import InputSummary
from chunkwise.params import RunParams
from chunkwise.plan.chunks import chunk_bounds, chunk_multiple, chunk_size_for, mean_request_tokens
from chunkwise.plan.figures import Plan, TokenStats
from chunkwise.plan.memory import fixed_buffers, memory_figures, slots_that_fit
from chunkwise.tokens import MIN_TOLERANCE, estimate_tokens

#: Decode time per token grows as 1 + context / ATTENTION_CONTEXT (measured on an H100 80GB, Llama-3.1-8B
#: shape, one CUDA-graph decode step, 2026-11-26: 5.64 ms at 1,024 tokens of context, 11.16 ms at 131,072,
#: 1.98x; decode is memory-bound, the cache is read once per token).
ATTENTION_CONTEXT = 131_072
#: Headroom on the estimated tokens of the largest request when recommending a num_ctx.
CONTEXT_MARGIN = MIN_TOLERANCE
CONTEXT_STEP = 1024
IDS_SHOWN = 10
REJECTS_SHOWN = 5


def _largest_within(limit: int, tokens_of: Any) -> int:
    """The most characters whose token count `tokens_of(chars)` (monotone) is still <= limit."""
    lo, hi = 0, 1
    while tokens_of(hi) <= limit:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tokens_of(mid) <= limit else (lo, mid)
    return lo


def _token_stats(prompt_chars: pa.Array, cpt: float) -> TokenStats | None:
    if len(prompt_chars) == 0:
        return None
    mm = pc.min_max(prompt_chars)
    p50, p95 = pc.quantile(prompt_chars, q=[0.5, 0.95], interpolation="nearest").to_pylist()
    mean = pc.mean(prompt_chars).as_py() / cpt
    return TokenStats(estimate_tokens(mm["min"].as_py(), cpt), estimate_tokens(int(p50), cpt), round(mean, 1),
                      estimate_tokens(int(p95), cpt), estimate_tokens(mm["max"].as_py(), cpt))


def build_plan(summary: InputSummary, params: RunParams, *, system_prompt: str, model_info: dict[str, Any] | None,
               model_info_source: str, free_vram_mib: float | None, gpu_reason: str | None,
               kv_cache_type: str = "f16", chars_per_token: float | None = None,
               prefill_tps: float | None = None, decode_tps: float | None = None,
               weights_mib: float | None = None, engine: str = "llama-server", server_version: str = "",
               fixed_slots: bool = False, server_slot_ctx: int | None = None, server_slots: int | None = None) -> Plan:
    """The plan of a run of `summary`'s accepted requests with `params` (see the module docstring).

    Token counts are estimates: characters / chars_per_token (default params.chars_per_token).
    free_vram_mib is the GPU's free memory
    now (None with gpu_reason when unknown); weights_mib the model's size when known. `engine` is the KV
    layout the server allocates (`Backend.kv_engine` of `server_version`: "llama-server" for Ollama v0.30+ and
    `--api openai`, "ollama" for Ollama's Go runners). `fixed_slots` (`Backend.context_fixed_at_start`:
    llama-server started with `-c`/`-np`) compares the run with the server's slots (`server_slot_ctx` tokens
    each, `server_slots`); Ollama's num_batch and compute-buffer estimate then do not apply."""
    cpt = params.chars_per_token if chars_per_token is None else chars_per_token
    if cpt <= 0:
        raise ValueError(f"chars_per_token must be positive, got {cpt}")
    conversation = params.mode == "conversation"
    n = summary.accepted
    sys_chars = len(system_prompt)
    sys_tokens = estimate_tokens(sys_chars, cpt)
    stats = _token_stats(summary.prompt_chars, cpt)
    mean_prompt = pc.mean(summary.prompt_chars).as_py() / cpt if n else 0.0
    mean_request = mean_request_tokens(summary, params.expected_answer_tokens, cpt)
    budget = params.num_ctx if conversation else params.chunk_token_budget
    size, computed = chunk_size_for(summary, params, system_prompt=system_prompt, chars_per_token=cpt)
    bounds = chunk_bounds(n, size, chunk_multiple(params), taper=conversation)  # as a new run plans them
    count = len(bounds) - 1
    steps = [b - a for a, b in pairwise(bounds)]
    sizes = (min(steps), max(steps)) if steps else (0, 0)

    # Characters of each request as sent: prompt + its own system prompt, else the run's.
    own = summary.system_chars
    req_chars = pc.add(summary.prompt_chars, pc.fill_null(own, sys_chars) if own is not None else sys_chars)
    largest = estimate_tokens(pc.max(req_chars).as_py() or 0, cpt) if n else sys_tokens
    fit_chars = _largest_within(params.num_ctx - params.num_predict, lambda c: estimate_tokens(c, cpt))
    too_long = (pc.sum(pc.greater(req_chars, fit_chars)).as_py() or 0) if n else 0
    too_long_ids = tuple(r.id for r in summary.longest
                         if r.chars + (0 if r.own_system else sys_chars) > fit_chars)[:IDS_SHOWN]
    need = math.ceil(largest * (1 + CONTEXT_MARGIN)) + params.num_predict
    independent_ctx = max(2 * CONTEXT_STEP, -(-need // CONTEXT_STEP) * CONTEXT_STEP)

    mem = memory_figures(model_info, model_info_source, params.num_ctx, params.parallel, kv_cache_type, engine,
                         server_version, not fixed_slots)
    per_token, kv_reason, training, reserved = mem.kv_per_token, mem.reason, mem.training, mem.kv_reserved
    available = free_vram_mib - (weights_mib or 0.0) - fixed_buffers(mem) if free_vram_mib is not None else None
    if free_vram_mib is None:
        fits, fit_detail = None, f"unknown: {gpu_reason or 'no GPU visible'}"
    elif reserved is None:
        fits, fit_detail = None, f"unknown: {kv_reason}"
    else:
        total = reserved + (weights_mib or 0.0) + mem.buffers
        weights = f"weights {weights_mib:,.0f} MiB" if weights_mib is not None else "weights unknown (not counted)"
        fits = total <= free_vram_mib
        if mem.compute >= mem.mask:  # Ollama's own estimate of the larger num_batch's buffers (v0.30+)
            buffers = f"compute buffers {mem.compute:,.0f} MiB (num_batch {mem.batch})"
        else:
            buffers = f"compute buffers >= {mem.mask:,.0f} MiB (the attention mask at num_batch {mem.batch})"
        fit_detail = (f"KV {reserved:,.0f} MiB + {weights} + {buffers} = {total:,.0f} MiB vs "
                      f"{free_vram_mib:,.0f} MiB free")
    ollama = not fixed_slots

    peak = sys_tokens + math.ceil(sizes[1] * mean_request) if conversation else None
    trim_at = int(params.trim_threshold * params.num_ctx) if conversation else None
    if prefill_tps and decode_tps:
        prompt_total = (pc.sum(summary.prompt_chars).as_py() or 0) / cpt
        if conversation:  # the system prompt once per chunk; earlier turns come from the prefix cache
            prefill = count * sys_tokens + prompt_total
            avg_ctx = sys_tokens + sizes[1] * mean_request / 2
        else:  # the system prompt is cached once per slot
            prefill = params.parallel * sys_tokens + prompt_total
            avg_ctx = sys_tokens + mean_prompt + params.expected_answer_tokens / 2
        decode = n * params.expected_answer_tokens
        slowdown = 1 + avg_ctx / ATTENTION_CONTEXT
        eta = prefill / prefill_tps + decode * slowdown / decode_tps
        eta_detail = (f"prefill {prefill:,.0f} tokens / {prefill_tps:g} tok/s + decode {decode:,} tokens x "
                      f"(1 + {avg_ctx:,.0f} / {ATTENTION_CONTEXT}) = x{slowdown:.3f} / {decode_tps:g} tok/s "
                      "(aggregate server rates at this parallel setting)")
    else:
        eta, eta_detail = None, "unknown: give --prefill-tps and --decode-tps (aggregate server tokens/s)"

    slots_ctx = slots_that_fit(mem, available, params.num_ctx)
    slots_ind = slots_that_fit(mem, available, independent_ctx)
    advice = _server_advice(params, server_slot_ctx, server_slots) if not ollama else []
    server_name = "Ollama" if ollama else "llama-server"
    if training is not None and params.num_ctx > training:
        advice.append(f"{server_name} clamps num_ctx to the model's training context {training}: set --num-ctx "
                      f"{training} or less (this plan assumes {params.num_ctx})")
    if too_long:
        fate = "Ollama would cut them silently" if ollama else "the server would refuse them (context_truncated)"
        advice.append(
            f"{too_long} requests exceed num_ctx {params.num_ctx} with the system prompt and num_predict "
            f"(estimated); {fate}: raise num_ctx to at least {independent_ctx}")
    if fits is False:
        advice.append("the KV cache does not fit the free VRAM: lower num_ctx or parallel, or use --kv-cache-type "
                      "q8_0 (needs OLLAMA_FLASH_ATTENTION=1 on Ollama before v0.30)")
    if conversation and peak is not None and trim_at is not None and peak > trim_at:
        advice.append(f"a chunk's conversation reaches about {peak} tokens, past the trim point {trim_at}: "
                      "its oldest turns will be dropped; lower --chunk-size")
    if slots_ctx is not None:
        advice.append(f"{'conversation' if conversation else 'this'} num_ctx {params.num_ctx}: {slots_ctx} "
                      f"parallel slot(s) fit the free VRAM")
    slot_mib = f", {per_token * independent_ctx:,.0f} MiB of KV per slot" if per_token is not None else ""
    advice.append(
        f"independent mode: num_ctx {independent_ctx} fits the largest request ({largest} tokens + "
        f"{CONTEXT_MARGIN:.0%} margin + num_predict {params.num_predict}){slot_mib}"
        + (f"; {slots_ind} parallel slot(s) of it fit the free VRAM: "
           + (f"set OLLAMA_NUM_PARALLEL and --parallel to {slots_ind}" if ollama else
              f"start llama-server with -np {slots_ind} -c {slots_ind * independent_ctx} and use --parallel "
              f"{slots_ind}") if slots_ind else ""))

    return Plan(
        input_path=summary.path, rows=summary.rows, accepted=n, rejected=summary.rejected,
        first_rejects=summary.first_rejects[:REJECTS_SHOWN], mode=params.mode, model=params.model,
        num_ctx=params.num_ctx, parallel=params.parallel, num_predict=params.num_predict,
        expected_answer_tokens=params.expected_answer_tokens, chars_per_token=cpt, budget_tokens=budget,
        budget_source="num_ctx" if conversation else "chunk_token_budget", chunk_size=size,
        chunk_size_computed=computed, chunk_count=count, chunk_sizes=sizes, prompt_tokens=stats,
        system_prompt_tokens=sys_tokens, mean_request_tokens=round(mean_request, 1),
        conversation_peak_tokens=peak, trim_at_tokens=trim_at, model_info_source=model_info_source,
        training_context=training, kv_cache_type=kv_cache_type,
        kv_mib_per_token=per_token, kv_reason=kv_reason, kv_reserved_mib=reserved, weights_mib=weights_mib,
        compute_buffer_mib=mem.compute, mask_mib_per_token=mem.mask_per_token, memory_mib_per_token=mem.per_token,
        mask_mib=mem.mask, batch=mem.batch, server_version=server_version,
        free_vram_mib=free_vram_mib, gpu_reason=gpu_reason, fits=fits,
        fit_detail=fit_detail,
        largest_request_tokens=largest, independent_num_ctx=independent_ctx, independent_slots=slots_ind,
        slots_at_num_ctx=slots_ctx, too_long_count=too_long, too_long_ids=too_long_ids, eta_s=eta,
        eta_detail=eta_detail, advice=tuple(advice), engine=engine, server_slot_ctx=server_slot_ctx,
        server_slots=server_slots,
    )


def _server_advice(params: RunParams, slot_ctx: int | None, slots: int | None) -> list[str]:
    """llama-server's context and slots are fixed when it starts (`-c` total, `-np` slots): say
    where the run's num_ctx and parallel differ from them."""
    out = []
    if slot_ctx is not None and params.num_ctx > slot_ctx:
        out.append(f"the server's slots hold {slot_ctx} tokens each (-c / -np): the run would stop at its "
                   f"preflight; use --num-ctx {slot_ctx} or less, or restart llama-server with -c "
                   f"{params.num_ctx * (slots or params.parallel)}")
    if slots is not None and params.parallel != slots:
        out.append(f"the server has {slots} slot(s) (-np) but --parallel is {params.parallel}: use --parallel {slots} "
                   "so every slot is busy and no request waits in the server's queue")
    return out
