"""The pure arithmetic of `chunkwise measure`: line fit, truncation check, num_ctx recommendation.

Memory is in MiB, contexts in tokens. Ollama reserves the KV cache for `num_ctx x parallel` tokens
when it loads a model (`KvSize: opts.NumCtx * numParallel`, `llm/server.go` in v0.20.0), so memory is a
straight line in num_ctx:
`memory = intercept + slope x num_ctx`, where the intercept is weights, compute buffers and
whatever else holds the GPU, and the slope is the cost of one context token in every slot.
Measuring that line needs a reload at every num_ctx: the 2025 seed measurement kept num_ctx fixed
and saw a flat line (a pre-allocated cache), which says nothing about the cost per token.

From Ollama v0.30 the automatic num_batch adds compute buffers in steps (768 MiB above 4,096 and
2 GiB above 32,768 tokens of effective context, `chunkwise.ollama.compute`). A straight line through
such a curve has a biased slope, so the run takes each reading's step out before the fit (the step
Ollama would choose for the loaded context and that reading's weights + KV, `measure.run`) and adds
it back when solving for the recommendation (`recommend_num_ctx(..., compute_mib=...)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Contexts (tokens) `chunkwise measure` tries when none are given.
DEFAULT_CONTEXTS = (1000, 5000, 10000, 20000, 40000, 60000, 80000, 100000)
#: Share of the memory capacity left free by the recommendation, and its floor (MiB): room for
#: compute buffers that grow with the batch, allocator fragmentation and the CUDA context of a
#: second process. NVML "used" already includes the allocator slack of what was measured.
MARGIN_FRACTION = 0.10
MIN_MARGIN_MIB = 1024.0
#: The recommendation is rounded down to a multiple of this many tokens.
NUM_CTX_STEP = 1024


@dataclass(frozen=True)
class Fit:
    """Least-squares line memory_mib = intercept_mib + slope_mib_per_token x num_ctx."""

    slope_mib_per_token: float
    intercept_mib: float
    r2: float | None
    points: int

    def predict(self, num_ctx: float) -> float:
        return self.intercept_mib + self.slope_mib_per_token * num_ctx

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_line(xs: Sequence[float], ys: Sequence[float],
             compute_mib: Callable[[int], float] | None = None) -> Fit | None:
    """Ordinary least squares; None when fewer than two distinct x values.

    `compute_mib(num_ctx)`: a known stepped term (MiB) taken out of each y before the fit.
    r2 is None when every y is the same (a flat line explains nothing and misses nothing)."""
    if len(xs) != len(ys):
        raise ValueError(f"fit_line needs as many x as y values; got {len(xs)} and {len(ys)}")
    if compute_mib is not None:
        ys = [y - compute_mib(int(x)) for x, y in zip(xs, ys, strict=True)]
    if len(set(xs)) < 2:
        return None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = None if ss_tot == 0 else max(0.0, 1.0 - ss_res / ss_tot)
    return Fit(slope, intercept, r2, n)


def truncation_check(
    expected_tokens: int,
    prompt_eval_count: int | None,
    num_ctx: int,
    tolerance: float,
    server_context_length: int | None = None,
) -> str | None:
    """Why Ollama's `prompt_eval_count` says the prompt was cut, or None if it looks whole.

    Flags (Ollama's runners: `truncating input prompt` in `runner/ollamarunner/runner.go` v0.20.0,
    `llm/llama_server.go` v0.30+): a count that reaches the context (Ollama 0.4-0.29 cut to
    exactly num_ctx; 0.30-0.30.10 to num_ctx - 1), and a count clearly below the prompt's expected
    tokens (`< expected x (1 - tolerance)`, which catches the >= 0.30.11 cut to about num_ctx/2 and a
    server that ignored num_ctx). The context is the smaller of the requested num_ctx and what
    /api/ps says the server loaded."""
    if prompt_eval_count is None:
        return "no prompt_eval_count in the answer: cannot check for truncation"
    limit = num_ctx if not server_context_length else min(num_ctx, server_context_length)
    if server_context_length and server_context_length < num_ctx:
        where = f"the server's context_length {server_context_length} (requested num_ctx {num_ctx})"
    else:
        where = f"num_ctx {num_ctx}"
    # num_ctx - 1 tokens is a legal prompt (llama-server refuses n_tokens >= n_ctx): it counts as a
    # cut only when more was sent
    if prompt_eval_count >= limit - 1 and expected_tokens >= limit:
        return f"prompt_eval_count {prompt_eval_count} fills {where}: the prompt of ~{expected_tokens} tokens was cut"
    if prompt_eval_count >= limit:
        return f"prompt_eval_count {prompt_eval_count} fills {where}, more than the ~{expected_tokens} tokens sent"
    if prompt_eval_count < expected_tokens * (1.0 - tolerance):
        return (
            f"prompt_eval_count {prompt_eval_count} is {1 - prompt_eval_count / expected_tokens:.0%} below the "
            f"~{expected_tokens} tokens sent (tolerance {tolerance:.0%}), limit {where}: the prompt was cut"
        )
    return None


def largest_within_steps(budget_mib: float, slope: float, compute_mib: Callable[[int], float], upper: int) -> int:
    """Largest num_ctx n <= upper with `slope x n + compute_mib(n) <= budget_mib` (0 when none fits).
    With slope > 0 and a non-decreasing compute term the left side only grows: a binary search."""
    lo, hi = 0, max(upper, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if slope * mid + compute_mib(mid) <= budget_mib:
            lo = mid
        else:
            hi = mid - 1
    return lo


def margin_mib(capacity_mib: float) -> float:
    """Memory the recommendation leaves free: MARGIN_FRACTION of capacity, at least MIN_MARGIN_MIB."""
    return max(MIN_MARGIN_MIB, MARGIN_FRACTION * capacity_mib)


@dataclass(frozen=True)
class Recommendation:
    """The largest num_ctx whose fitted memory stays below capacity - margin."""

    num_ctx: int | None
    capacity_mib: float | None
    capacity_source: str
    margin_mib: float | None
    margin_rule: str
    limited_by: str
    extrapolated: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recommend_num_ctx(
    fit: Fit | None,
    capacity_mib: float | None,
    capacity_source: str,
    *,
    parallel: int = 1,
    context_length: int | None = None,
    max_measured: int | None = None,
    step: int = NUM_CTX_STEP,
    compute_mib: Callable[[int], float] | None = None,
) -> Recommendation:
    """`floor((capacity - margin - intercept - compute) / slope)`, rounded down to `step`, at most the
    model's training `context_length`. The slope already covers all `parallel` slots, so the answer is
    the num_ctx of each slot. `compute_mib(num_ctx)` is the stepped compute-buffer term (non-decreasing
    in num_ctx): the largest num_ctx whose own step still fits is chosen."""
    rule = f"max({MIN_MARGIN_MIB:.0f} MiB, {MARGIN_FRACTION:.0%} of capacity)"

    def none(note: str, margin: float | None = None) -> Recommendation:
        return Recommendation(None, capacity_mib, capacity_source, margin, rule, "unknown", False, note)

    if fit is None:
        return none("no recommendation: fewer than two usable measurements to fit a line")
    margin = margin_mib(capacity_mib) if capacity_mib is not None else None
    if not fit.slope_mib_per_token > 0:
        return none(
            f"no recommendation: the fitted slope is {fit.slope_mib_per_token:.6f} MiB/token, i.e. memory did "
            "not grow with num_ctx; the server did not reload with each num_ctx or the readings are not of "
            "the GPU that serves the model",
            margin,
        )
    if capacity_mib is None or margin is None:
        return none(f"no recommendation: unknown memory capacity ({capacity_source})")
    budget = capacity_mib - margin - fit.intercept_mib
    raw = math.floor(budget / fit.slope_mib_per_token)
    if compute_mib is not None:
        raw = largest_within_steps(budget, fit.slope_mib_per_token, compute_mib, raw)
        budget -= compute_mib(raw) if raw > 0 else 0.0
    if raw < step:
        return Recommendation(
            None, capacity_mib, capacity_source, margin, rule, "memory", False,
            f"no safe num_ctx: the model alone ({fit.intercept_mib:.0f} MiB) leaves {budget:.0f} MiB after the "
            f"{margin:.0f} MiB margin, less than {step} tokens x {parallel} slot(s) need; lower parallel or "
            "use a smaller quantisation",
        )
    value = raw // step * step
    limited_by = "memory"
    if context_length and value >= context_length:
        value, limited_by = context_length, "model context_length"
    extrapolated = bool(max_measured and value > max_measured)
    predicted = fit.predict(value) + (compute_mib(value) if compute_mib is not None else 0.0)
    note = (
        f"num_ctx {value} per slot x {parallel} slot(s): fitted {predicted:.0f} MiB of "
        f"{capacity_mib:.0f} MiB capacity ({capacity_source}), leaving >= {margin:.0f} MiB margin"
    )
    if limited_by == "model context_length":
        note += f"; capped at the model's context_length {context_length}"
    if extrapolated:
        note += f"; extrapolated beyond the largest measured num_ctx {max_measured}: confirm with a run at it"
    return Recommendation(value, capacity_mib, capacity_source, margin, rule, limited_by, extrapolated, note)
