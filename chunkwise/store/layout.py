"""The layout of a run directory `<output_dir>/<run_name>/`.

    manifest.json          what the run is (input fingerprint, model digest, options, mode, plan)
    requests.parquet       the accepted requests, staged from the input (small row groups)
    rejects.parquet        rows quarantined before sending, with the reason
    staged.json            the input fingerprint and limits the two files above were staged with
    ledger/chunk-NNNNN.jsonl   per-request outcomes, appended and fsynced as they happen
    chunks/chunk-NNNNN.parquet finished chunks (atomic, self-verifying)
    results.parquet        one row per input request, in input order
    stats.json             totals, tokens, throughput, latency, memory
    gpu_samples.csv        the GPU sampler's time series
    prefect-results/       Prefect's persisted chunk-task results (cache records)
    .lock                  held (flock) by the one process working on the run
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chunkwise.params import RUN_NAME_RE
from chunkwise.store.files import contained


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def requests(self) -> Path:
        return self.root / "requests.parquet"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects.parquet"

    @property
    def results(self) -> Path:
        return self.root / "results.parquet"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def prefect_results(self) -> Path:
        return self.root / "prefect-results"

    def ledger(self, index: int) -> Path:
        return self.root / "ledger" / f"chunk-{index:05d}.jsonl"

    def checkpoint(self, index: int) -> Path:
        return self.root / "chunks" / f"chunk-{index:05d}.parquet"


def default_run_name(input_path: str, now: datetime | None = None) -> str:
    """`<input stem>-<UTC time>`, reduced to the characters a run name allows."""
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in Path(input_path).stem).strip(".-") or "run"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stem[:80]}-{stamp}"
    assert RUN_NAME_RE.match(name), name
    return name


def run_paths(output_dir: str | Path, run_name: str) -> RunPaths:
    """The run's paths; the name was validated by RunParams and is checked for containment again."""
    return RunPaths(contained(Path(output_dir), run_name))
