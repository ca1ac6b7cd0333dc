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
"""

from __future__ import annotations


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
