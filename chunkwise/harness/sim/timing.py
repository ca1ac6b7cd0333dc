"""The simulator's timing model. All results are integer nanoseconds, as Ollama reports them.

A token evaluated at context position p (0-based; the number of tokens already in the context)
costs `(1 + p / scale) / rate` seconds, where `rate` is the prefill or decode rate in tokens/s and
`scale` is `SimOptions.attention_scale_tokens` (131,072 by default). Attention reads the whole
cache for every token, so late tokens of a long context are slower: with the default a decoded token at
131,072 tokens of context costs 2.0x one at the start, as measured on an H100 80GB for the Llama-3.1-8B
shape (11.16 vs 5.64 ms per token at 131,072 vs 1,024 tokens of context, 1.98x; 2026-11-26). The same
factor is applied to prefill, a simplification (prefill attention grows faster in reality). scale 0
disables it.

Summing over positions `start .. start+count-1` gives the closed form used by `span_ns`:
`(count + (count * start + count * (count - 1) / 2) / scale) / rate`.

Prefill covers only the tokens not found in the slot's cache (research ollama.md section 4);
decode covers the generated tokens, starting at position = prompt tokens.

Slots share one engine (continuous batching: llama-server decodes every busy slot in one batch per
step, and a prompt's chunks ride in the same batches). Two effects, both modelled here:

- Decoding is memory-bound, so a batch of n sequences costs more than one but far less than n:
  aggregate decode rate = decode_tps x n^BATCH_GAIN, i.e. each of n busy slots decodes
  `slot_slowdown(n) = n^(1 - BATCH_GAIN)` times slower. n is the number of busy slots when the
  request takes its slot (evaluated once: cheap, and exact for a steady load).
  BATCH_GAIN = 0.55 comes from llama.cpp's own batched-bench sample (`examples/batched-bench/README.md`,
  LLaMA 7B F16, prompt 128 / 128 generated): S_TG 41.57 t/s at B=1, 74.44 at B=4, 139.43 at B=8,
  242.23 at B=16, i.e. B^0.42, B^0.58, B^0.64. Not calibrated on an H100 with Ollama.
- With `decode_batch_tps` set (the fast-engine preset, `presets.py`) the power law gives way to a
  step-time model, the shape of a memory-bound decode step: every step reads the weights once
  (fixed) plus each busy sequence's KV and work (per sequence), so one step with n busy slots costs
  `(1 + (n - 1) k) / decode_tps` and the aggregate rate n x decode_tps / (1 + (n - 1) k) rises with
  n and flattens (toward decode_tps / k); k is chosen so that all `parallel` slots busy give exactly
  `decode_batch_tps` (`step_slowdown`). This is what "saturates at full batch" means for vLLM or
  SGLang at their `max_num_seqs` / `max_running_requests`.
- A prefill is compute-bound and takes the engine from the others: while a request's uncached prompt
  is evaluated (prefill_ns), every other busy slot's decoding is delayed by PREFILL_SHARE x prefill_ns.
  PREFILL_SHARE = 0.5 is an assumption (llama-server interleaves prompt chunks of n_batch tokens with
  the decode tokens, so the others keep stepping, slower); calibrate it with a real engine.

With the default rates of 0 nothing sleeps and none of this costs anything.
"""

from __future__ import annotations

#: Aggregate decode rate with n busy slots = decode_tps x n ** BATCH_GAIN (llama.cpp batched-bench sample).
BATCH_GAIN = 0.55
#: Share of a prefill's duration by which it delays the other busy slots' decoding (assumption).
PREFILL_SHARE = 0.5


def slot_slowdown(busy: int, gain: float = BATCH_GAIN) -> float:
    """How much slower each of `busy` slots decodes than a lone one: busy ** (1 - gain)."""
    return 1.0 if busy <= 1 else busy ** (1.0 - gain)


def step_slowdown(busy: int, slots: int, single_tps: float, full_tps: float) -> float:
    """How much slower each of `busy` slots decodes than a lone one in the step-time model (module
    docstring): 1 + (busy - 1) k, with k such that `slots` busy slots decode `full_tps` tokens/s in all
    when one alone decodes `single_tps`. A full rate above slots x single_tps would need steps to get
    cheaper with more sequences; k is then 0 (linear scaling)."""
    if busy <= 1 or slots <= 1 or single_tps <= 0 or full_tps <= 0:
        return 1.0
    k = max(0.0, (slots * single_tps / full_tps - 1.0) / (slots - 1))
    return 1.0 + (busy - 1) * k


def decode_slowdown(busy: int, slots: int, gain: float, single_tps: float, full_tps: float) -> float:
    """Each busy slot's decode slowdown: the step-time model when `full_tps` (decode_batch_tps) is set,
    else the power law of `gain`."""
    if full_tps > 0:
        return step_slowdown(busy, slots, single_tps, full_tps)
    return slot_slowdown(busy, gain)


def prefill_stall_ns(prefill: int, share: float = PREFILL_SHARE) -> int:
    """Nanoseconds a prefill of `prefill` ns delays each other busy slot's decoding."""
    return round(prefill * share)


def span_ns(start: int, count: int, rate: float, scale: int) -> int:
    """Nanoseconds to evaluate `count` tokens at positions `start..start+count-1`; 0 if `rate` is 0."""
    if rate <= 0 or count <= 0:
        return 0
    units = float(count)
    if scale > 0:
        units += (count * start + count * (count - 1) / 2) / scale
    return round(units / rate * 1e9)


def prefill_ns(cached: int, uncached: int, rate: float, scale: int) -> int:
    """Prompt evaluation time for the `uncached` tokens that follow `cached` reused tokens."""
    return span_ns(cached, uncached, rate, scale)


def decode_ns(prompt_tokens: int, generated: int, rate: float, scale: int) -> int:
    """Generation time of `generated` tokens after a prompt of `prompt_tokens`."""
    return span_ns(prompt_tokens, generated, rate, scale)
