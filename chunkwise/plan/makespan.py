"""A model of a run's makespan (issue 22 item 5): how long N hosts take for R requests, from measured
per-request and per-shard costs, so a run too large for this machine (the reference job of 170,000
requests on 8 GPU hosts) can be predicted from what this machine can measure. Pure arithmetic.

The run, as the model sees it (every term a measured input; bench/makespan_model.py calibrates them):

- `fixed_s`: the command's own costs outside the sending window: start (Prefect's API, checks, staging:
  command start to the first request) and end (results, statistics). Measured, per machine and load.
- Each host sends at `host_rps` requests/s while it has work (the steady rate: the engine's rate times the
  client's slot utilisation while sending, `SimStats.slots` `utilisation_sending`).
- Distributed mode cuts the requests into shards of `shard_requests`; a host runs its shards one after
  another and loses `gap_s` between two (worker poll, the next shard's process start, its preflight:
  5.2 s with Prefect 3.9.1's process worker, bench/results/scaleout.md); its first shard waits one gap too.
  The busiest host runs ceil(shards / N) of them. Single-process runs have no shards and no gap.
- `drain_s`: after the last request is sent, the slots empty as the last answers end (one answer's length
  at the engine's batch speed).

- Shards sized by time (`chunkwise/plan/shards.py`: an opening, then shards of a few minutes at each host's
  measured rate, the last ones tapering) let the hosts finish together, and a worker dispatched ahead
  starts its next shard while the current one sends (`chunkwise.cluster.lookahead`: idle between shards
  0.00 %, bench/results/shards_ahead.md): `balanced=True` then gives the busiest host requests / N and
  `gap_s` is 0.

makespan = fixed_s + busiest host's requests / host_rps + its shards x gap_s + drain_s. It ignores what
the benchmarks show to be small at few-minute shards: hosts of unequal speed, retries, the API's own
queueing; the calibration error against measured runs says how much that leaves out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Costs:
    """Measured costs (seconds, requests/s) the model is built from."""

    host_rps: float
    fixed_s: float
    drain_s: float = 0.0
    gap_s: float = 0.0
    #: Requests the first round starts at once (a host's slots): under way from the first request on, so a
    #: host's sending (first to last request) takes (its requests - in_flight) / host_rps, then the drain.
    in_flight: int = 0


@dataclass(frozen=True)
class Makespan:
    """The predicted run: its length (s) and the parts it is made of."""

    seconds: float
    sending_s: float
    gaps_s: float
    shards_per_host: int


def makespan(requests: int, hosts: int, costs: Costs, shard_requests: int | None = None, *,
             balanced: bool = False) -> Makespan:
    """Predicted seconds from the command to the end for `requests` over `hosts` hosts; `shard_requests`
    None: one process sends everything (no shards, one host); `balanced`: shards sized by time, whose
    taper ends every host together (the busiest host sends requests / hosts)."""
    if requests < 1 or hosts < 1 or costs.host_rps <= 0:
        raise ValueError("requests and hosts must be >= 1 and host_rps > 0")
    if shard_requests is None:
        if hosts != 1:
            raise ValueError("several hosts need shards (distributed mode): give shard_requests")
        sending = max(0, requests - costs.in_flight) / costs.host_rps
        return Makespan(costs.fixed_s + sending + costs.drain_s, sending, 0.0, 0)
    shards = math.ceil(requests / shard_requests)
    per_host = math.ceil(shards / hosts)
    # fixed shards hold counts as even as whole chunks allow; balanced ones end the hosts together
    busiest = requests / hosts if balanced else min(requests, per_host * requests / shards)
    sending = max(0.0, busiest - costs.in_flight) / costs.host_rps
    gaps = per_host * costs.gap_s
    return Makespan(costs.fixed_s + sending + gaps + costs.drain_s, sending, gaps, per_host)
