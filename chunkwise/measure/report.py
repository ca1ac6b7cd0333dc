"""The result of `chunkwise measure`: one `MeasureRow` per num_ctx and the `MeasureReport`.

Memory in MiB, rates in tokens/s, load time in seconds. `MeasureReport.as_dict()` is JSON-ready
(measure.json, the Prefect flow's return value).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.measure.fit import Fit, Recommendation

SOURCE_NVML = "nvml"
SOURCE_PS = "ps"
SOURCE_PS_SIZE = "ps_size"
SOURCE_RSS = "rss"
SOURCE_TEXT = {
    SOURCE_NVML: "NVML used memory (the whole GPU, every process) on this machine",
    SOURCE_PS: "Ollama /api/ps size_vram (Ollama's own accounting, not a GPU reading)",
    SOURCE_PS_SIZE: "Ollama /api/ps size (size_vram 0 at every context: the model ran on the CPU, all of it in "
                    "system RAM; Ollama's own accounting of its buffers)",
    SOURCE_RSS: "llama-server process RSS (VmRSS: mmapped weights, KV cache and touched compute buffers of a CPU "
                "build)",
}


@dataclass
class MeasureRow:
    """One num_ctx. Memory in MiB, rates in tokens/s, load time in seconds."""

    num_ctx: int
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    prompt_tokens_expected: int | None = None
    prompt_chars: int | None = None
    token_count_method: str = ""
    prompt_eval_count: int | None = None
    truncated: bool = False
    truncation_reason: str = ""
    eval_count: int | None = None
    load_s: float | None = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None
    ps_size_mib: float | None = None
    ps_size_vram_mib: float | None = None
    ps_context_length: int | None = None
    spilled: bool = False
    nvml_used_mib: float | None = None
    nvml_peak_mib: float | None = None
    formula_kv_mib: float | None = None
    vram_mib: float | None = None
    in_fit: bool = False
    #: The batch the runner ran with (Ollama's num_batch: its rule for the loaded context), tokens: its tier.
    batch: int | None = None
    #: Ollama on this machine: the runner process's VmHWM after the answer (its peak since the load), MiB.
    rss_peak_mib: float | None = None
    # --local-engine (llama-server restarted per context): memory right after load and after the answer;
    # Ollama on this machine: rss_mib is the runner process's VmRSS after the answer
    load_mib: float | None = None
    rss_load_mib: float | None = None
    rss_mib: float | None = None


@dataclass
class MeasureReport:
    model: str
    host: str
    server_version: str
    is_simulator: bool
    parallel: int
    kv_cache_type: str
    num_predict: int
    vram_source: str
    rows: list[MeasureRow]
    fit: Fit | None
    fit_ps: Fit | None
    fit_nvml: Fit | None
    formula_mib_per_token_per_slot: float | None
    formula_mib_per_token: float | None
    relative_difference: float | None
    recommendation: Recommendation
    context_length: int | None
    gpu: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    api: str = "ollama"  # ollama | openai (llama-server started by measure, one start per context)
    #: The server was started per context and the fit is of memory at load (its reservation): llama-server,
    #: whose context is fixed at start. False: the model was loaded per request and memory read after it.
    memory_at_load: bool = False
    fit_after: Fit | None = None  # memory_at_load: memory after each answer (the main fit is at load)
    #: Whose KV layout the formula follows ("ollama": Ollama's Go runners; "llama-server": Ollama v0.30+).
    kv_engine: str = "ollama"
    #: What the server's memory should grow by per num_ctx token, all slots, MiB: KV x parallel + the compute
    #: graph's attention mask at `batch` (`mask_mib_per_token`); None without a KV formula.
    predicted_mib_per_token: float | None = None
    mask_mib_per_token: float | None = None
    predicted_relative_difference: float | None = None
    #: The main batch tier (the fit's), tokens, and every tier (`chunkwise.measure.tiers.Tier.as_dict`).
    batch: int | None = None
    tiers: list[dict[str, Any]] = field(default_factory=list)
    #: --api ollama on this machine: the runner's RSS against num_ctx (main tier), explained in the notes.
    fit_rss: Fit | None = None
    md_path: Path | None = None
    csv_path: Path | None = None
    png_path: Path | None = None
    json_path: Path | None = None
    markdown: str = ""

    @property
    def slope_mib_per_token(self) -> float | None:
        return self.fit.slope_mib_per_token if self.fit else None

    @property
    def intercept_mib(self) -> float | None:
        return self.fit.intercept_mib if self.fit else None

    @property
    def r2(self) -> float | None:
        return self.fit.r2 if self.fit else None

    @property
    def vram_source_text(self) -> str:
        return SOURCE_TEXT[self.vram_source]

    @property
    def ok(self) -> bool:
        """Every context measured or deliberately skipped, none cut, and a line fitted."""
        return self.fit is not None and not any(r.status == "failed" or r.truncated for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("markdown",)}
        for key in ("md_path", "csv_path", "png_path", "json_path"):
            out[key] = str(out[key]) if out[key] else None
        out.update(slope_mib_per_token=self.slope_mib_per_token, intercept_mib=self.intercept_mib, r2=self.r2,
                   vram_source_text=self.vram_source_text)
        return out
