"""What the readings of `chunkwise measure` say (`chunkwise.measure.run` takes them): which memory figure to
fit and which rows may enter it, the memory the model may use, the fit per batch tier
(`chunkwise.measure.tiers`), the prediction it is held to (`chunkwise.measure.compare` holds it), and the
recommendation.

Memory source, in order: NVML "used" when the GPU is on this machine; else Ollama's /api/ps. From /api/ps
`size_vram` is the GPU's share and a reading with `size_vram < size` spilled to the CPU (left out); but a
server that put nothing on a GPU at any context (`size_vram` 0 everywhere: a CPU-only server, or a model
that fits no GPU) holds all of `size` in system RAM, so `size` is fitted and nothing is a spill.

The prediction (MiB per token of num_ctx, all slots): the KV of the global layers in the server's layout
(`chunkwise.ollama.kv`, by `Backend.kv_engine` of its version) plus the compute graph's attention mask at the
main tier's batch (`chunkwise.ollama.graph`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from chunkwise.measure.fit import Recommendation, recommend_num_ctx
from chunkwise.measure.report import SOURCE_NVML, SOURCE_PS, SOURCE_PS_SIZE, MeasureRow
from chunkwise.measure.rss import mem_total_mib
from chunkwise.measure.tiers import TierFit, fit_tiers
from chunkwise.ollama import compute, graph, kv
from chunkwise.units import MIB


def cpu_only(rows: list[MeasureRow]) -> bool:
    """Every measured context reported `size_vram` 0 with a `size`: nothing of the model was on a GPU."""
    measured = [r for r in rows if r.status == "ok" and r.ps_size_mib]
    return bool(measured) and all(not r.ps_size_vram_mib for r in measured)


def take_cpu_only(rows: list[MeasureRow], warnings: list[str]) -> str:
    """For a server that put nothing on a GPU (`cpu_only`): its loads are no spills, so their spill flags and
    warnings go; the note that says so."""
    spills = sum(r.spilled for r in rows)
    for r in rows:
        r.spilled = False
    warnings[:] = [w for w in warnings if "does not fit in GPU memory" not in w]
    return (f"/api/ps size_vram is 0 at every context ({spills} 'spill' warning(s) dropped): the server ran the model "
            "on the CPU, so its memory is /api/ps size, all in system RAM (on a server with a GPU: the model fitted "
            "it at no context)")


def reading(row: MeasureRow, source: str) -> float | None:
    """The memory figure of `row` for `source`, MiB."""
    return {SOURCE_NVML: row.nvml_used_mib, SOURCE_PS: row.ps_size_vram_mib, SOURCE_PS_SIZE: row.ps_size_mib}[source]


def _add_note(row: MeasureRow, note: str) -> None:
    row.note = (row.note + "; " if row.note else "") + note


def fit_rows(rows: list[MeasureRow], source: str, parallel: int) -> list[MeasureRow]:
    """The rows the line may use: answered, not spilled, and loaded at the context asked for (/api/ps shows
    num_ctx, or num_ctx x parallel where the scheduler multiplied it into the runner's options, Ollama 0.2-0.9,
    or nothing before 0.10). Sets each row's reading for `source` and notes why a row is left out."""
    def clamped(r: MeasureRow) -> bool:
        return bool(r.ps_context_length) and r.ps_context_length not in (r.num_ctx, r.num_ctx * parallel)

    for r in rows:
        r.vram_mib = reading(r, source) if r.status == "ok" else None
        if r.status == "ok" and clamped(r):
            _add_note(r, f"the server loaded context_length {r.ps_context_length}, not the requested {r.num_ctx}: "
                      "left out of the fit")
        if r.spilled:
            _add_note(r, "spilled to CPU: left out of the fit")
    return [r for r in rows if r.status == "ok" and not r.spilled and not clamped(r)]


def capacity_of(source: str, gpus: list[dict[str, Any]], vram_mib: float | None, local: bool,
                rows: list[MeasureRow]) -> tuple[float | None, str]:
    """The memory the model may use, MiB, and where that figure comes from: NVML's total, --vram-mib, this
    machine's RAM for a local CPU-only server, or the most a spilled load placed on the GPU."""
    if source == SOURCE_NVML:
        return sum(g["total_mib"] for g in gpus), "NVML total memory of all GPUs"
    if vram_mib:
        return float(vram_mib), "--vram-mib"
    if source == SOURCE_PS_SIZE and local:
        return mem_total_mib(), "MemTotal of this machine's RAM (/proc/meminfo)"
    spilled = [r.ps_size_vram_mib for r in rows if r.spilled and r.ps_size_vram_mib]
    if spilled:
        return max(spilled), "largest size_vram of a spilled load (what Ollama could place on the GPU)"
    return None, "no NVML reading of the Ollama host's GPU and no --vram-mib given"


def mark_in_fit(rows: list[MeasureRow], tiers: TierFit) -> None:
    """Flags the rows of the main tier's line; the others of a tier of their own get a note."""
    for r in rows:
        r.in_fit = tiers.main is not None and r.vram_mib is not None and r.batch == tiers.main_batch
        if tiers.main is not None and r.vram_mib is not None and r.batch != tiers.main_batch:
            _add_note(r, f"num_batch {r.batch}: another batch tier, not in the slope")


@dataclass(frozen=True)
class Predictor:
    """The server's memory per num_ctx token (all slots), MiB, from the model's numbers; None parts unknown."""

    layout: kv.KVLayout | None
    parallel: int

    @property
    def kv_per_slot(self) -> float | None:
        return self.layout.global_bytes_per_token / MIB if self.layout else None

    def mask(self, batch: int, slots: int | None = None) -> float:
        """The attention mask's growth per num_ctx token at `batch`, MiB (0 without a layout)."""
        if self.layout is None:
            return 0.0
        return graph.mask_bytes_per_token(self.layout, slots or self.parallel, batch) / MIB

    def slope(self, batch: int) -> float | None:
        kv_slot = self.kv_per_slot
        return None if kv_slot is None else kv_slot * self.parallel + self.mask(batch)


def batch_of(version: str, num_ctx: int, parallel: int, training: int | None, memory_mib: float | None,
             capacity_mib: float | None) -> int:
    """The batch Ollama ran `num_ctx` with (`compute.runner_batch`): from v0.30 lowered where the memory it
    expected (taken as the reading) left no room under `capacity_mib`; its estimate decides, not the reading."""
    return compute.runner_batch(version, num_ctx, parallel, training, memory_mib, capacity_mib)


def tier_fit(rows: list[MeasureRow], value: Callable[[MeasureRow], float | None]) -> TierFit:
    return fit_tiers([(r.num_ctx, float(v), r.batch or 0) for r in rows if (v := value(r)) is not None])


def recommend(tiers: TierFit, predictor: Predictor, capacity: float | None, cap_source: str, *, version: str,
              parallel: int, context_length: int | None, max_measured: int | None) -> Recommendation:
    """The largest num_ctx whose memory fits: the main line, plus at each context the step of the batch Ollama
    would pick there: measured where that tier was, else the mask's growth and Ollama's own estimate of the
    buffers (an upper bound, labelled in the note)."""
    fit, main_batch = tiers.main, tiers.main_batch
    if fit is None or main_batch is None:
        return recommend_num_ctx(None, capacity, cap_source)

    def batch_at(n: int) -> int:
        return batch_of(version, n, parallel, context_length, fit.predict(n), capacity)

    def step(n: int) -> float:
        batch = batch_at(n)
        measured = tiers.step_mib(batch, n)
        if measured is not None:
            return measured
        surcharge = compute.SURCHARGE_MIB.get(batch, 0.0) - compute.SURCHARGE_MIB.get(main_batch, 0.0)
        return max(0.0, (predictor.mask(batch) - predictor.mask(main_batch)) * n + surcharge)

    rec = recommend_num_ctx(fit, capacity, cap_source, parallel=parallel, context_length=context_length,
                            max_measured=max_measured, compute_mib=step)
    if rec.num_ctx and tiers.tier(batch_at(rec.num_ctx)) is None:
        rec = replace(rec, note=rec.note + f"; num_batch {batch_at(rec.num_ctx)} was not measured: its step is the "
                      "mask's growth and Ollama's own estimate of its compute buffers (an upper bound)")
    return rec


def tier_notes(tiers: TierFit, predictor: Predictor) -> list[str]:
    """One line per tier besides the main one."""
    notes = []
    for t in tiers.tiers:
        if t.batch == tiers.main_batch or tiers.main is None:
            continue
        own = f"its own line {t.fit.slope_mib_per_token:.6f} MiB/token; " if t.fit is not None else ""
        estimate = compute.SURCHARGE_MIB.get(t.batch, 0.0) - compute.SURCHARGE_MIB.get(tiers.main_batch or 0, 0.0)
        notes.append(f"num_batch {t.batch} (contexts {', '.join(map(str, t.contexts))}): {own}{t.offset_mib:+.1f} MiB "
                     f"from the num_batch {tiers.main_batch} line at its contexts (Ollama plans with "
                     f"{estimate:+.0f} MiB for it): not in the slope")
    if tiers.main is None and tiers.tiers:
        notes.append("no two contexts share a batch tier (" + "; ".join(
            f"num_batch {t.batch}: {', '.join(map(str, t.contexts))}" for t in tiers.tiers)
            + "): add a context within one of them for a slope")
    return notes
