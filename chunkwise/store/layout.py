"""The layout of a run directory `<output_dir>/<run_name>/`: every file and folder name a run writes is
spelled here and nowhere else (`RunPaths`; the bare names for code that is handed a directory).

    manifest.json              what the run is (input fingerprint, model digest, options, mode, plan)
    requests.parquet           the accepted requests, staged from the input (small row groups)
    rejects.parquet            rows quarantined before sending, with the reason
    staged.json                the input fingerprint and limits the two files above were staged with
    token_sample.json          conversation mode: the server's token count of a sample of the rows (chunk sizes)
    ledger/chunk-NNNNN.jsonl   per-request outcomes, appended and fsynced as they happen
    chunks/chunk-NNNNN.parquet finished chunks (atomic, self-verifying)
    results.parquet            one row per input request, in input order
    stats.json                 totals, tokens, throughput, latency, memory
    gpu_samples.csv            the GPU sampler's time series (also in each host's folder, distributed)
    batch_output.jsonl         --output-format openai: the OpenAI Batch API output file
    batch_errors.jsonl         --output-format openai: the OpenAI Batch API error file
    prefect-results/           Prefect's persisted chunk-task results (cache records)
    .lock                      held (flock) by the one process working on the run
    .write-test                created and removed at once: proves the directory can be written
    .NAME.tmp-PID              a temporary file being written (`RunPaths.temp`), removed at the next start
  distributed mode (`--pool`):
    cluster.json               the run's context, for its shards
    shards.json                which chunks each shard holds
    locks/chunk-NNNNN.lock     held by the one process sending the chunk, on any host
    locks/shard-NNNN-aA.lock   held by shard N's attempt A for its whole life
    hosts/<label>.jsonl        each host's facts (chunks it sent, shards it ran or refused)
    hosts/<label>/             each host's own files (its gpu_samples.csv)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chunkwise.params import RUN_NAME_RE
from chunkwise.store.files import contained

MANIFEST, REQUESTS, REJECTS, STAGED = "manifest.json", "requests.parquet", "rejects.parquet", "staged.json"
LEDGER_DIR, CHUNKS_DIR, RESULTS, STATS = "ledger", "chunks", "results.parquet", "stats.json"
GPU_SAMPLES, PREFECT_RESULTS, LOCK, WRITE_TEST = "gpu_samples.csv", "prefect-results", ".lock", ".write-test"
BATCH_OUTPUT, BATCH_ERRORS = "batch_output.jsonl", "batch_errors.jsonl"
CLUSTER, SHARDS, LOCKS_DIR, HOSTS_DIR = "cluster.json", "shards.json", "locks", "hosts"
TOKEN_SAMPLE = "token_sample.json"


@dataclass(frozen=True)
class RunPaths:
    """Every path of the run directory `root` (see the module docstring)."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def requests(self) -> Path:
        return self.root / REQUESTS

    @property
    def rejects(self) -> Path:
        return self.root / REJECTS

    @property
    def staged(self) -> Path:
        return self.root / STAGED

    @property
    def token_sample(self) -> Path:
        return self.root / TOKEN_SAMPLE

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def stats(self) -> Path:
        return self.root / STATS

    @property
    def gpu_samples(self) -> Path:
        return self.root / GPU_SAMPLES

    @property
    def batch_output(self) -> Path:
        return self.root / BATCH_OUTPUT

    @property
    def batch_errors(self) -> Path:
        return self.root / BATCH_ERRORS

    @property
    def prefect_results(self) -> Path:
        return self.root / PREFECT_RESULTS

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def write_test(self) -> Path:
        return self.root / WRITE_TEST

    @property
    def ledger_dir(self) -> Path:
        return self.root / LEDGER_DIR

    @property
    def chunks_dir(self) -> Path:
        return self.root / CHUNKS_DIR

    def ledger(self, index: int) -> Path:
        return self.ledger_dir / f"chunk-{index:05d}.jsonl"

    def checkpoint(self, index: int) -> Path:
        return self.chunks_dir / f"chunk-{index:05d}.parquet"

    def all_checkpointed(self, indexes: Iterable[int]) -> bool:
        """Whether every one of these chunks has its checkpoint in place (present; a chunk task still
        verifies its bytes before trusting it)."""
        return all(self.checkpoint(index).exists() for index in indexes)

    @property
    def cluster_context(self) -> Path:
        return self.root / CLUSTER

    @property
    def shards(self) -> Path:
        return self.root / SHARDS

    def chunk_lock(self, index: int) -> Path:
        return self.root / LOCKS_DIR / f"chunk-{index:05d}.lock"

    def shard_lock(self, shard: int, attempt: int) -> Path:
        return self.root / LOCKS_DIR / f"shard-{shard:04d}-a{attempt}.lock"

    @property
    def hosts_dir(self) -> Path:
        return self.root / HOSTS_DIR

    def temp(self, name: str) -> Path:
        """This process's temporary file for `name` (`.name.tmp-PID`): renamed into place, or removed by the
        next start (`chunkwise.run.rundir.remove_temp_files`) when a crash left it behind."""
        return self.root / f".{name}.tmp-{os.getpid()}"


def _stem(input_path: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in Path(input_path).stem).strip(".-") or "run"


def default_run_name(input_path: str, now: datetime | None = None) -> str:
    """`<input stem>-<UTC time>`, reduced to the characters a run name allows (a flow run's own name)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    name = f"{_stem(input_path)[:80]}-{stamp}"
    assert RUN_NAME_RE.match(name), name
    return name


def content_run_name(input_path: str, identity: str) -> str:
    """`<input stem>-<first 12 hex digits of identity>`: the name a run gets when none is given, the same
    for the same input and options (`chunkwise.run.manifest.run_identity`), so the same command resumes."""
    name = f"{_stem(input_path)[:80]}-{identity[:12]}"
    assert RUN_NAME_RE.match(name), name
    return name


def run_paths(output_dir: str | Path, run_name: str) -> RunPaths:
    """The run's paths; the name was validated by RunParams and is checked for containment again."""
    return RunPaths(contained(Path(output_dir), run_name))
