"""Shards: the unit of work one host pulls in distributed mode (pure; no Prefect, no I/O but the
record in the run directory).

A shard is a contiguous range of chunks worth a few minutes of one host's work. Few-minute shards
keep Prefect's per-shard cost under a few per cent of the run: a worker poll of up to
`PREFECT_WORKER_QUERY_SECONDS` (`chunkwise worker` sets 1 s; Prefect's default is 10 s) plus ~3 s to
start the shard's flow-run process (one interpreter, `python -m prefect.engine`; 5.2 s between shards
in all, measured with Prefect 3.9.1's process worker, bench/results/scaleout.md), while the tail
(the last shard on the slowest host) stays short. Chunks are never split: a chunk is the unit of
checkpointing and of the per-chunk lock (`chunkwise.store.chunklock`).

Shard `k` covers chunks `shards[k]`; the sets are disjoint, cover every chunk, and hold request
counts as even as whole chunks allow (greedy fill to the target). The plan is written once to
`<run dir>/shards.json` and re-read by a restarted parent, so a shard index always names the same
chunks (the dispatch idempotency key `run:shard:attempt` depends on it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from chunkwise.plan.chunks import ChunkSpec
from chunkwise.store.files import write_json_atomic
from chunkwise.store.layout import RunPaths

#: Default shard length when nothing better is known: 3 minutes at 5 requests/s per host (the low end
#: of one Ollama GPU's 5-20 req/s, issue 11) = 900 requests.
DEFAULT_SHARD_SECONDS = 180.0
DEFAULT_HOST_RPS = 5.0


class Shard(BaseModel):
    """One shard: its index and the chunk indexes it covers (ascending)."""

    model_config = ConfigDict(frozen=True)

    index: int
    chunks: tuple[int, ...]
    requests: int


def requests_per_shard(seconds: float = DEFAULT_SHARD_SECONDS, host_rps: float = DEFAULT_HOST_RPS) -> int:
    """Requests in `seconds` of one host's work at `host_rps` requests/s (at least 1)."""
    if seconds <= 0 or host_rps <= 0:
        raise ValueError(f"shard seconds and host req/s must be positive, got {seconds} and {host_rps}")
    return max(1, math.floor(seconds * host_rps))


def plan_shards(specs: Sequence[ChunkSpec], target_requests: int) -> list[Shard]:
    """Group consecutive chunks into shards of about `target_requests` requests.

    The shard count is round-half-up(total / target) (at least 1, at most one per chunk); chunks are
    then cut where the running request count crosses each k x total / count, so shards differ by at
    most about one chunk's size and none is empty.
    """
    if target_requests < 1:
        raise ValueError(f"target_requests must be at least 1, got {target_requests}")
    if not specs:
        return []
    total = sum(s.size for s in specs)
    count = min(len(specs), max(1, (2 * total + target_requests) // (2 * target_requests)))
    shards: list[Shard] = []
    current: list[ChunkSpec] = []
    done = 0
    for position, spec in enumerate(specs):
        current.append(spec)
        done += spec.size
        remaining_chunks = len(specs) - position - 1
        remaining_shards = count - len(shards) - 1
        boundary = (len(shards) + 1) * total / count
        # Close the shard at its boundary, keeping at least one chunk for every shard still to come.
        if remaining_shards > 0 and (done >= boundary or remaining_chunks == remaining_shards):
            shards.append(_shard(len(shards), current))
            current = []
    if current:
        shards.append(_shard(len(shards), current))
    return shards


def _shard(index: int, specs: list[ChunkSpec]) -> Shard:
    return Shard(index=index, chunks=tuple(s.index for s in specs), requests=sum(s.size for s in specs))


def shards_path(run_dir: Path) -> Path:
    return RunPaths(Path(run_dir)).shards


def load_or_write(run_dir: Path, specs: Sequence[ChunkSpec], target_requests: int) -> list[Shard]:
    """The run's shards: those recorded in `shards.json` when they still cover exactly these chunks
    (a restarted parent must give every shard index the same chunks), else a new plan, recorded."""
    path = shards_path(run_dir)
    chunk_indexes = sorted(s.index for s in specs)
    if path.exists():
        data = json.loads(path.read_text())
        recorded = [Shard(**s) for s in data["shards"]]
        if data.get("chunks") == [s.model_dump() for s in specs] and \
                sorted(i for s in recorded for i in s.chunks) == chunk_indexes:
            return recorded
    shards = plan_shards(specs, target_requests)
    write_json_atomic(path, {"target_requests": target_requests, "shards": [s.model_dump() for s in shards],
                             "chunks": [s.model_dump() for s in specs]})
    return shards


def load_recorded(run_dir: Path, shard: int) -> list[ChunkSpec]:
    """The chunk descriptors of recorded shard `shard` (what a shard flow on any host runs)."""
    recorded = json.loads(shards_path(run_dir).read_text())
    by_index = {c["index"]: ChunkSpec(**c) for c in recorded["chunks"]}
    for entry in recorded["shards"]:
        if entry["index"] == shard:
            return [by_index[i] for i in entry["chunks"]]
    raise ValueError(f"shard {shard} is not in {shards_path(run_dir)}; the run was re-planned, so this shard run "
                     "is stale: let the parent dispatch again")
