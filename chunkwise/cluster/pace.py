"""A host's measured rate (requests/s) from the facts its shards recorded (pure but for reading the
facts; no Prefect): what the parent sizes the rest of a run's shards by (`chunkwise.plan.shards`).

Per shard attempt on a host: the requests of its closed chunks (`kind: chunk` facts, `requests` sent)
over the time from its first chunk's start (`chunk-start`) to its last closing (epoch `at` both), so
far. That is the throughput the attempt reached, ramp-up included (nothing ends before one answer's
length: ~5 s for a fast engine at 256 in flight, under 3 % of a 3-minute shard, ~10 % of a 40-s opening
shard, so early figures err low and shards come out a little shorter than asked, never longer). The
rate between closings alone was rejected: a shard smaller than the host's slots sends all its chunks at
once and they close together, which reads as an absurd rate. A host's rate pools its attempts (requests
over seconds); the run's is the median over its hosts (any shard may go to any host).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from chunkwise.cluster.hosts import read_facts
from chunkwise.plan.shards import DEFAULT_HOST_RPS, Shard, pending_chunks, plan_rest

#: Chunk closings a host needs before its rate counts ...
MIN_CLOSINGS = 4
#: ... and seconds of sending they span (a rate over less is mostly noise).
MIN_SPAN_S = 2.0


def host_rate(facts: Iterable[Mapping[str, Any]]) -> tuple[int, float] | None:
    """(requests, seconds) of one host's measured sending, summed over its shard attempts (see the module
    docstring); None until MIN_CLOSINGS closings over MIN_SPAN_S."""
    starts: dict[tuple[Any, Any], float] = {}
    closed: dict[tuple[Any, Any], list[tuple[float, int]]] = {}
    for f in facts:
        if "shard" not in f or f.get("kind") not in ("chunk-start", "chunk"):
            continue
        key, at = (f["shard"], f.get("attempt", 0)), float(f["at"])
        if f["kind"] == "chunk-start":
            starts[key] = min(at, starts.get(key, at))
        elif f.get("requests"):
            closed.setdefault(key, []).append((at, int(f["requests"])))
    requests, seconds, closings = 0, 0.0, 0
    for key, ends in closed.items():
        if key in starts:
            requests += sum(n for _, n in ends)
            seconds += max(at for at, _ in ends) - starts[key]
            closings += len(ends)
    return (requests, seconds) if closings >= MIN_CLOSINGS and seconds >= MIN_SPAN_S else None


def measured_rps(run_dir: Path) -> tuple[float, int] | None:
    """(median requests/s over the hosts measured so far, hosts measured), or None before any is."""
    rates = []
    for label_facts in read_facts(Path(run_dir)).values():
        measured = host_rate(label_facts)
        if measured is not None:
            rates.append(measured[0] / measured[1])
    return (statistics.median(rates), len(rates)) if rates else None


def rest_planner(run_dir: Path, shard_seconds: float,
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
            return plan_rest(run_dir, measured[0], f"measured: median of {measured[1]} host(s)", shard_seconds)
        if all_done:
            return plan_rest(run_dir, DEFAULT_HOST_RPS, "estimate: no host was measured", shard_seconds)
        return []
    return extend
