"""Named sets of simulator options (`SimOptions.preset`, `chunkwise sim --preset NAME`): a preset fills
every option the caller leaves out; options given beside it win.

`fast-engine`: one H100 running vLLM or SGLang with an 8B model in FP8, the engines users move to when
a batch matters. Each number and where it comes from:

- `parallel` 256: sequences decoded at once. vLLM's default `max_num_seqs` is 256 on GPUs under 70 GiB
  and 1,024 on an H100 (`vllm/engine/arg_utils.py`, `get_batch_defaults`); 256 is what issue 22 asks
  the client to keep busy per host, and what a tuned MLPerf submission runs near. `chunkwise run
  --parallel auto` reads the real count where the server states it.
- `decode_batch_tps` 5,800: aggregate output tokens/s with every slot busy. MLPerf Inference v5.1,
  Llama-3.1-8B, vLLM 0.10.0 with FP8 on one H100: 5,777 output tokens/s offline (Red Hat's results
  blog, research/peers-2026-12.md section 3.2). That figure was measured with each sample's prompt
  (~700-900 tokens) prefilled in the same batches, so it is the rate with prefill already paid.
- `prefill_share` 0: for that reason a prefill takes nothing more from the other slots' decoding
  (charging it again would count the prefill twice). The engine's chunked prefill rides in the decode
  steps' spare compute (decode is memory-bound), which is how MLPerf's number was reached.
- `prefill_tps` 30,000: one request's prompt evaluation rate, tokens/s: Modal's vLLM throughput example
  (Qwen3-8B, ~30,000 input + ~2,000 output tokens/s per H100; peers-2026-12.md section 3.2). It sets
  the time to first token of each request (a 700-token prompt: 23 ms), not the host's throughput.
- `decode_tps` 300: one sequence decoding alone, tokens/s. Measured on an H100 with the Llama-3.1-8B
  shape in bf16: 5.64 ms per token at 1,024 tokens of context, 14.0 GB of weights read per token at
  2.5 TB/s (research/gpu-measurements.md section 2); FP8 weights are 8.0 GB, so 8.0 / 2.5 TB/s + the
  KV = ~3.3 ms, ~300 tokens/s. With `parallel` and `decode_batch_tps` it fixes the step-time curve
  (`timing.step_slowdown`): 64 busy slots give ~3,900 tokens/s, 256 give 5,800.
- Prefix cache: the simulator's per-slot cache (`scheduler.py`: a request takes the free slot with the
  longest common token prefix and evaluates only the rest). With 256 slots every free slot holds a
  recent prompt, so a shared system prompt is found as vLLM's automatic prefix caching finds it.
- `kv_layout` paged: vLLM and SGLang allocate a block pool from what the GPU has left (vLLM's
  `gpu_memory_utilization` 0.9 by default), not num_ctx x slots up front, so /api/ps never reports a
  spill for many slots.
- `attention_scale_tokens` keeps its H100 measurement (1.98x per token at 131,072 tokens of context).

Reference-job arithmetic (170,000 requests of ~700 prompt + ~200 answer tokens): at 5,800 output
tokens/s and 200-token answers one host answers 29 requests/s; the MLPerf shape (~120 answer tokens)
gives the ~48 requests/s of issue 22. The simulator does not choose: answer lengths are
`answer_tokens`, set per benchmark.
"""

from __future__ import annotations

from typing import Any

FAST_ENGINE: dict[str, Any] = {
    "parallel": 256,
    "decode_tps": 300.0,
    "decode_batch_tps": 5800.0,
    "prefill_tps": 30000.0,
    "prefill_share": 0.0,
    "kv_layout": "paged",
}

PRESETS: dict[str, dict[str, Any]] = {"fast-engine": FAST_ENGINE}
