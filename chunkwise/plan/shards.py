"""Shards: the unit of work one host pulls in distributed mode (pure; no Prefect, no I/O but the
record in the run directory).

A shard is a contiguous range of chunks worth a few minutes of one host's work. Few-minute shards
keep Prefect's per-shard cost under a few per cent of the run: a worker poll of up to
`PREFECT_WORKER_QUERY_SECONDS` (`chunkwise worker` sets 1 s; Prefect's default is 10 s) plus ~3 s to
start the shard's flow-run process (one interpreter, `python -m prefect.engine`; 5.2 s between shards
in all, measured with Prefect 3.9.1's process worker, bench/results/scaleout.md), while the tail
(the last shard on the slowest host) stays short. `chunkwise worker` now starts the next shard ahead
(`chunkwise.cluster.turn`), which hides that cost; the size still bounds the tail. Chunks are never
split: a chunk is the unit of checkpointing and of the per-chunk lock (`chunkwise.store.chunklock`).

Sized by time. A shard is `shard_seconds` (`--shard-seconds`, default 180 s) of one host's work at the
host's measured rate, so an engine answering 48 requests/s gets shards of ~8,600 requests and an Ollama
host at 5 requests/s shards of 900: the per-shard cost stays the same share of the run whatever the
engine. The rate is measured on the run itself, not guessed: the run opens with `OPENING_SHARDS` shards
sized at the slow-host estimate (`DEFAULT_HOST_RPS`, 5 requests/s: 900 requests at 180 s; at least
`OPENING_ROUNDS` rounds of the run's `--parallel` slots) over the first chunks and leaves the rest
unplanned; once a host has closed a few chunks (`chunkwise.cluster.pace`: the rate between chunk
closings, ramp-up left out) the parent plans the rest at that rate, the last few shards tapering
(`TAPER`: half, then a quarter of the size) so that the host holding the last shard, and the one holding
a shard started ahead of it, finish close to the others; and never fewer than `MIN_SHARDS_PER_HOST`
shards per host seen so far. A calibration probe was rejected (its answers
would be paid for outside the ledger, or it would hold every host idle while it ran); a rate from the
plan's own model would be a guess. `--shard-requests N` keeps a fixed size (no opening, no taper). When
no host ever gets measured (every opening shard refused), the rest is planned at the slow-host estimate
when the opening is done.

Shard `k` covers chunks `shards[k]`; the sets are disjoint, cover every planned chunk, and hold request
counts as even as whole chunks allow. The plan is written to `<run dir>/shards.json` (the opening and
the still unplanned chunks, then once the rest with the rate it was sized by and where the rate came
from) and re-read by a restarted parent, so a shard index always names the same chunks (the dispatch
idempotency key `run:shard:attempt` depends on it); a parent restarted before the rest was planned
measures again from the facts the hosts already recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from chunkwise.plan.chunks import ChunkSpec
from chunkwise.store.files import write_json_atomic
from chunkwise.store.layout import RunPaths

#: Default shard length, s of one host's work (a few minutes: see the module docstring).
DEFAULT_SHARD_SECONDS = 180.0
#: The opening shards' rate estimate, requests/s per host: the low end of one Ollama GPU's 5-20 req/s
#: (issue 11), so a slow host's first shards are not hours long; a fast one's are short, and few.
DEFAULT_HOST_RPS = 5.0
#: Shards sized at the estimate before the rest waits for a measured rate: two per host for four hosts
#: (each `chunkwise worker` holds its shard and the next), longer than the ~15 s a measurement takes.
OPENING_SHARDS = 8
#: ... each at least this many rounds of the run's slots (`--parallel`): a shard of fewer requests than a
#: few rounds is mostly its ramp-up and its drain, and ends before the next shard's process is ready.
OPENING_ROUNDS = 4
#: The last shards of a time-sized plan, as fractions of the size, the very last first.
TAPER = (0.25, 0.25, 0.5, 0.5)
#: The rest of a plan holds at least this many shards per host seen so far, whatever the seconds say: a
#: run of a few shards per host would otherwise leave hosts idle (50,000 requests on 8 hosts at 48 req/s
#: are 130 s of work each, less than one 180-s shard of 8,640 requests); but no shard under
#: `OPENING_ROUNDS` rounds of the slots (measured: 650-request shards on 256-slot hosts ended before the
#: next shard's process was up on a loaded machine, 13 % idle; bench/results/shards_ahead.md).
MIN_SHARDS_PER_HOST = 2


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


def plan_shards(specs: Sequence[ChunkSpec], target_requests: int, first: int = 0) -> list[Shard]:
    """Group consecutive chunks into shards of about `target_requests` requests, numbered from `first`.

    The shard count is round-half-up(total / target) (at least 1, at most one per chunk); chunks are
    then cut where the running request count crosses each k x total / count, so shards differ by at
    most about one chunk's size and none is empty.
    """
    if target_requests < 1:
        raise ValueError(f"target_requests must be at least 1, got {target_requests}")
    total = sum(s.size for s in specs)
    count = min(len(specs), max(1, (2 * total + target_requests) // (2 * target_requests)))
    return _cut(specs, [total * (k + 1) / count for k in range(count)], first)


def plan_tapered(specs: Sequence[ChunkSpec], target_requests: int, first: int = 0) -> list[Shard]:
    """Shards of about `target_requests`, the last ones smaller (`TAPER`), numbered from `first`: the
    sizes are laid from the end (TAPER, then the full size) until they hold every request, and the
    first shard takes what is left over (at most one full size)."""
    if target_requests < 1:
        raise ValueError(f"target_requests must be at least 1, got {target_requests}")
    if not specs:
        return []
    total = sum(s.size for s in specs)
    sizes: list[float] = []
    laid = 0.0
    while laid < total:
        k = len(sizes)
        sizes.append(target_requests * (TAPER[k] if k < len(TAPER) else 1.0))
        laid += sizes[-1]
    sizes.reverse()
    if len(sizes) > 1 and sum(sizes[1:]) >= total - sizes[0] / 2:
        # a first shard of under half its size would only add a shard's cost: fold it into the next
        sizes = sizes[1:]
    boundaries: list[float] = []
    done = 0.0
    for size in sizes:
        done += size
        boundaries.append(done)
    excess = boundaries[-1] - total
    return _cut(specs, [max(0.0, b - excess) for b in boundaries[:-1]] + [float(total)], first)


def _cut(specs: Sequence[ChunkSpec], boundaries: list[float], first: int) -> list[Shard]:
    """Close shard k where the running request count reaches boundaries[k], keeping at least one chunk
    for every shard still to come (so at most one shard per chunk, none empty)."""
    if not specs:
        return []
    count = min(len(specs), len(boundaries))
    shards: list[Shard] = []
    current: list[ChunkSpec] = []
    done = 0
    for position, spec in enumerate(specs):
        current.append(spec)
        done += spec.size
        remaining_chunks = len(specs) - position - 1
        remaining_shards = count - len(shards) - 1
        boundary = boundaries[len(boundaries) - count + len(shards)]
        if remaining_shards > 0 and (done >= boundary or remaining_chunks == remaining_shards):
            shards.append(_shard(first + len(shards), current))
            current = []
    if current:
        shards.append(_shard(first + len(shards), current))
    return shards


def _shard(index: int, specs: list[ChunkSpec]) -> Shard:
    return Shard(index=index, chunks=tuple(s.index for s in specs), requests=sum(s.size for s in specs))


def shards_path(run_dir: Path) -> Path:
    return RunPaths(Path(run_dir)).shards


def _record(run_dir: Path, specs: Sequence[ChunkSpec], shards: list[Shard], pending: list[int],
            sizing: list[dict[str, Any]]) -> None:
    write_json_atomic(shards_path(run_dir), {
        "shards": [s.model_dump() for s in shards], "pending": pending, "sizing": sizing,
        "chunks": [s.model_dump() for s in specs]})


def _recorded(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(shards_path(run_dir).read_text())
    data.setdefault("pending", [])
    data.setdefault("sizing", [{"source": "fixed", "requests": data.get("target_requests")}])
    return data


def load_or_write(run_dir: Path, specs: Sequence[ChunkSpec], target_requests: int | None,
                  shard_seconds: float = DEFAULT_SHARD_SECONDS, parallel: int = 1) -> list[Shard]:
    """The run's planned shards: those recorded in `shards.json` when they (with the chunks still
    unplanned) cover exactly these chunks (a restarted parent must give every shard index the same
    chunks), else a new plan, recorded: every chunk in shards of `target_requests` when it is given,
    else the opening (`OPENING_SHARDS` shards of `shard_seconds` at `DEFAULT_HOST_RPS`, at least
    `OPENING_ROUNDS` x `parallel` requests) with the rest left for `plan_rest`."""
    path = shards_path(run_dir)
    chunk_indexes = sorted(s.index for s in specs)
    if path.exists():
        data = _recorded(run_dir)
        recorded = [Shard(**s) for s in data["shards"]]
        if data.get("chunks") == [s.model_dump() for s in specs] and \
                sorted([i for s in recorded for i in s.chunks] + list(data["pending"])) == chunk_indexes:
            return recorded
    if target_requests is not None:
        shards = plan_shards(specs, target_requests)
        _record(run_dir, specs, shards, [], [{"source": "fixed", "requests": target_requests}])
        return shards
    opening = max(requests_per_shard(shard_seconds, DEFAULT_HOST_RPS), OPENING_ROUNDS * parallel)
    head: list[ChunkSpec] = []
    for spec in specs:
        if head and sum(s.size for s in head) + spec.size > OPENING_SHARDS * opening:
            break
        head.append(spec)
    shards = plan_shards(head, opening)
    pending = [s.index for s in specs[len(head):]]
    _record(run_dir, specs, shards, pending, [{"source": "opening", "requests": opening, "seconds": shard_seconds,
                                               "host_rps": DEFAULT_HOST_RPS, "shards": len(shards)}])
    return shards


def pending_chunks(run_dir: Path) -> list[int]:
    """Chunks the recorded plan has not put in a shard yet (waiting for a measured rate)."""
    return list(_recorded(run_dir)["pending"])


def plan_rest(run_dir: Path, host_rps: float, source: str, shard_seconds: float = DEFAULT_SHARD_SECONDS,
              hosts: int = 1, parallel: int = 1) -> list[Shard]:
    """Plan the unplanned chunks at `host_rps` (shards of `shard_seconds`, at most 1 / (`hosts` x
    MIN_SHARDS_PER_HOST) of them each but never under `OPENING_ROUNDS` x `parallel`, tapered), record
    them with the rate and its `source`, and return them; [] when nothing is pending. Once per run."""
    data = _recorded(run_dir)
    if not data["pending"]:
        return []
    by_index = {c["index"]: ChunkSpec(**c) for c in data["chunks"]}
    pending = sum(by_index[i].size for i in data["pending"])
    balanced = max(pending // (MIN_SHARDS_PER_HOST * max(1, hosts)), OPENING_ROUNDS * parallel, 1)
    target = min(requests_per_shard(shard_seconds, host_rps), balanced)
    first = 1 + max((s["index"] for s in data["shards"]), default=-1)
    rest = plan_tapered([by_index[i] for i in data["pending"]], target, first)
    shards = [Shard(**s) for s in data["shards"]] + rest
    sizing = [*data["sizing"], {"source": source, "requests": target, "seconds": shard_seconds,
                                "host_rps": round(host_rps, 3), "hosts": hosts, "shards": len(rest)}]
    _record(run_dir, list(by_index.values()), shards, [], sizing)
    return rest


def load_recorded(run_dir: Path, shard: int) -> list[ChunkSpec]:
    """The chunk descriptors of recorded shard `shard` (what a shard flow on any host runs)."""
    recorded = json.loads(shards_path(run_dir).read_text())
    by_index = {c["index"]: ChunkSpec(**c) for c in recorded["chunks"]}
    for entry in recorded["shards"]:
        if entry["index"] == shard:
            return [by_index[i] for i in entry["chunks"]]
    raise ValueError(f"shard {shard} is not in {shards_path(run_dir)}; the run was re-planned, so this shard run "
                     "is stale: let the parent dispatch again")
