"""A host's measured rate (requests/s) from the facts its shards recorded (pure but for reading the
facts; no Prefect): what the parent sizes the rest of a run's shards by (`chunkwise.plan.shards`).

A host's chunks close (`kind: chunk` facts: epoch `at`, `requests` sent) at the rate it answers while it
is kept busy: its rate is the slope of its requests closed against time (least squares over its
closings, across all its shards). A slope, not the first and last closing alone: chunks close in clumps
(at 256 in flight, answers end in rounds that close two or three 100-row chunks at once; on a busy
client, records land late and then together), so the rate between two closings depends on where the
clumps fall (82 req/s read off a 48 req/s host after 10 s in the 3-host bench on 2 shared cores), and a
line through every closing is moved much less. Starting at the first closing leaves out the ramp-up
(nothing ends before one answer's length: ~5 s for a fast engine at 256 in flight), which a rate counted
from the first request would charge to a short measurement (~30 % low after 15 s). Across shards, not
per shard: the next shard starts sending during the tail of the one before (`chunkwise.cluster.turn`),
so per-shard spans overlap and their sum would count that time twice; and a shard smaller than the
host's slots sends all its chunks at once, so its own closings come together and say nothing. Any time
the host waited between shards stays in, as it will in the shards being sized. The run's rate is the
median over its hosts (any shard may go to any host).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from chunkwise.cluster.hosts import read_facts
from chunkwise.plan.shards import DEFAULT_HOST_RPS, Shard, pending_chunks, plan_rest

#: Chunk closings a host needs before its rate counts ...
MIN_CLOSINGS = 6
#: ... and seconds between its first and last closing (shorter is mostly noise: chunks that close
#: together, one answer's length of variation, a burst of late records).
MIN_SPAN_S = 20.0


def host_rate(facts: Iterable[Mapping[str, Any]]) -> float | None:
    """One host's measured rate, requests/s (see the module docstring); None until it has MIN_CLOSINGS
    closings over MIN_SPAN_S."""
    ends = sorted((float(f["at"]), int(f["requests"])) for f in facts
                  if f.get("kind") == "chunk" and "shard" in f and f.get("requests"))
    if len(ends) < MIN_CLOSINGS or ends[-1][0] - ends[0][0] < MIN_SPAN_S:
        return None
    times, closed, total = [], [], 0
    for at, n in ends:
        total += n
        times.append(at - ends[0][0])
        closed.append(float(total))
    mean_t, mean_c = statistics.fmean(times), statistics.fmean(closed)
    slope = sum((t - mean_t) * (c - mean_c) for t, c in zip(times, closed, strict=True)) / \
        sum((t - mean_t) ** 2 for t in times)
    return slope if slope > 0 else None


def measured_rps(run_dir: Path) -> tuple[float, int] | None:
    """(median requests/s over the hosts measured so far, hosts measured), or None before any is."""
    rates = []
    for label_facts in read_facts(Path(run_dir)).values():
        measured = host_rate(label_facts)
        if measured is not None:
            rates.append(measured)
    return (statistics.median(rates), len(rates)) if rates else None


def hosts_seen(run_dir: Path) -> int:
    """Hosts that have started a chunk of this run so far (at least 1)."""
    return max(1, sum(1 for facts in read_facts(Path(run_dir)).values()
                      if any(f.get("kind") == "chunk-start" for f in facts)))


def rest_planner(run_dir: Path, shard_seconds: float, parallel: int = 1,
                 measure: Callable[[Path], tuple[float, int] | None] = measured_rps,
                 ) -> Callable[[bool], list[Shard] | None]:
    """The parent's `extend` (`chunkwise.cluster.parent.supervise`): plans the run's unplanned chunks
    (`chunkwise.plan.shards.plan_rest`) at the first measured rate, or at the slow-host estimate once
    every shard launched is done with no host measured; [] while waiting, None once nothing is pending."""
    def extend(all_done: bool) -> list[Shard] | None:
        if not pending_chunks(run_dir):
            return None
        measured = measure(run_dir)
        if measured is not None:
            return plan_rest(run_dir, measured[0], f"measured: median of {measured[1]} host(s)", shard_seconds,
                             hosts_seen(run_dir), parallel)
        if all_done:
            return plan_rest(run_dir, DEFAULT_HOST_RPS, "estimate: no host was measured", shard_seconds,
                             hosts_seen(run_dir), parallel)
        return []
    return extend
