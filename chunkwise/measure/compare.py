"""The measured slope held to the KV formula and to the prediction (`chunkwise measure`), with the notes that
explain a difference: another number of slots or cache type than the user gave, the attention mask the formula
leaves out, or assumptions of the prediction (flash attention, Ollama's num_batch rule).

All slopes are MiB per num_ctx token, all slots together. Pure: `chunkwise.measure.run` passes the fit in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chunkwise.measure.analysis import Predictor
from chunkwise.measure.fit import Fit
from chunkwise.ollama.kv import BYTES_PER_ELEMENT

#: Past this relative difference the output says why (2 %: well above the fit's noise on a quiet server).
EXPLAIN_ABOVE = 0.02


def explain_difference(slope: float, per_slot: float, parallel: int, kv_cache_type: str,
                       mask: Callable[[int], float] | None = None) -> str | None:
    """A likely cause when the measured slope is not the prediction's (within 1 %): another number of
    slots with the given cache type, or another cache type with the given slots. `mask(slots)` is the
    attention mask's growth per token for that many slots, MiB (none when not given)."""
    per_element = per_slot / BYTES_PER_ELEMENT[kv_cache_type]
    guesses = [(slots, kv_cache_type) for slots in range(1, 17) if slots != parallel]
    guesses += [(parallel, cache) for cache in BYTES_PER_ELEMENT if cache != kv_cache_type]
    for slots, cache in guesses:
        guess = per_element * BYTES_PER_ELEMENT[cache] * slots + (mask(slots) if mask else 0.0)
        if abs(slope - guess) <= 0.01 * guess:
            return (f"the measured slope matches {slots} slot(s) of a {cache} cache: check the server's "
                    f"OLLAMA_NUM_PARALLEL and OLLAMA_KV_CACHE_TYPE and pass --parallel / --kv-cache-type")
    return None


@dataclass(frozen=True)
class Comparison:
    """The KV formula and the prediction (MiB per token, all slots), the mask at the main tier's batch, and the
    fit's relative difference to each; None where a part is unknown (no formula, no fit)."""

    formula: float | None = None
    relative_difference: float | None = None
    predicted: float | None = None
    mask: float | None = None
    predicted_relative_difference: float | None = None
    notes: list[str] = field(default_factory=list)


def compare(fit: Fit | None, predictor: Predictor, batch: int | None, kv_cache_type: str) -> Comparison:
    """`fit` (the main tier's line, at num_batch `batch`) against the formula and the prediction."""
    per_slot, parallel = predictor.kv_per_slot, predictor.parallel
    formula = per_slot * parallel if per_slot is not None else None
    slope = fit.slope_mib_per_token if fit is not None else None
    rel = (slope - formula) / formula if slope is not None and formula else None
    predicted = predictor.slope(batch) if batch is not None else None
    mask = predictor.mask(batch) if batch is not None and predictor.layout is not None else None
    pred_rel = (slope - predicted) / predicted if slope is not None and predicted else None
    notes = []
    if slope is not None and per_slot and pred_rel is not None and abs(pred_rel) > EXPLAIN_ABOVE and slope > 0:
        hint = explain_difference(slope, per_slot, parallel, kv_cache_type,
                                  lambda slots: predictor.mask(batch or 0, slots))
        notes.append(hint or "the measured slope differs from the prediction by more than 2%: the prediction assumes "
                     "flash attention (without it the attention scores grow with num_ctx too) and the num_batch of "
                     "Ollama's rule (a num_batch set in the Modelfile or the request changes the mask)")
    elif rel is not None and abs(rel) > EXPLAIN_ABOVE and mask:
        notes.append(f"measured - KV formula = {rel:+.1%}: the compute graph's f16 attention mask grows "
                     f"{mask:.6f} MiB per token at num_batch {batch} (chunkwise.ollama.graph: "
                     "kvcache/causal.go buildMask in Ollama's engine, src/llama-graph.cpp in llama.cpp)")
    return Comparison(formula, rel, predicted, mask, pred_rel, notes)
