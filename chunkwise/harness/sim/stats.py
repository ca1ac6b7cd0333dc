"""Counters behind GET /sim/stats. Single event loop, so no locks.

Status keys are strings: "200", "400", ..., "499" (client went away before the answer was
written) and "reset" (the simulator aborted the connection on purpose). A fingerprint is
"received" when a chat/generate body with a model was parsed (even if it was then refused) and
"answered" when its complete `done: true` response was written.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from chunkwise.harness.sim.faults import KINDS, PERSISTENT_KINDS

#: The width of one occupancy bucket (`SimStats.slots` `occupancy_per_s`), ns.
OCCUPANCY_BUCKET_NS = 1_000_000_000


class SimStats:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.faults: dict[str, int] = {kind: 0 for kind in (*KINDS, *PERSISTENT_KINDS)}
        #: Prompt tokens of answered requests: evaluated (not found in the slot's cache) and served from the cache.
        self.prompt_tokens_evaluated = 0
        self.prompt_tokens_cached = 0
        self.faults["load_failure"] = 0
        #: Answers during which the context filled and llama-server shifted it (half the context dropped).
        self.context_shifts = 0
        self.loads = 0
        self.unloads = 0
        #: fingerprint -> [received, answered]
        self.fingerprints: dict[str, list[int]] = {}
        self.received_total = 0
        self.answered_total = 0
        self.max_answered = 0
        self.answered_twice = 0
        #: Slot occupancy: total ns slots were leased, first lease start and last release (perf_counter_ns).
        self.slot_busy_ns = 0
        self.first_lease_ns: int | None = None
        self.last_release_ns: int | None = None
        #: Slots leased now, the leased slot-ns integrated up to the last lease or release, and when that was.
        self._leased = 0
        self._integral_ns = 0
        self._event_ns: int | None = None
        #: The last lease's start and the leased slot-ns up to it: after it the client had nothing left to
        #: send, and the slots empty as the last answers end (the drain, which no client can fill).
        self.last_lease_ns: int | None = None
        self.busy_at_last_lease_ns = 0
        #: Leased slot-ns per `OCCUPANCY_BUCKET_NS` since the first lease: where in a run the slots stood idle
        #: (a slow start, a gap between chunks, a ragged end), which the utilisation alone cannot say.
        self._occupancy_ns: list[int] = []
        #: Every finished lease as (start, end) ns: `slots(skip_leases=k)` measures from the (k+1)-th lease on.
        self.leases: list[tuple[int, int]] = []

    def _advance(self, now_ns: int) -> None:
        if self._event_ns is not None:
            self._integral_ns += self._leased * max(0, now_ns - self._event_ns)
            if self._leased and self.first_lease_ns is not None:
                self._occupy(self._event_ns - self.first_lease_ns, now_ns - self.first_lease_ns)
        self._event_ns = now_ns if self._event_ns is None else max(self._event_ns, now_ns)

    def _occupy(self, start_ns: int, end_ns: int) -> None:
        """Spread `_leased` slots x [start, end) (ns since the first lease) over the occupancy buckets."""
        while start_ns < end_ns:
            bucket = start_ns // OCCUPANCY_BUCKET_NS
            stop = min(end_ns, (bucket + 1) * OCCUPANCY_BUCKET_NS)
            while len(self._occupancy_ns) <= bucket:
                self._occupancy_ns.append(0)
            self._occupancy_ns[bucket] += self._leased * (stop - start_ns)
            start_ns = stop

    def slot_acquired(self, now_ns: int) -> None:
        if self.first_lease_ns is None:
            self.first_lease_ns = now_ns
        self._advance(now_ns)
        self._leased += 1
        self.last_lease_ns, self.busy_at_last_lease_ns = now_ns, self._integral_ns

    def slot_released(self, since_ns: int, now_ns: int) -> None:
        self.slot_busy_ns += now_ns - since_ns
        self.leases.append((since_ns, now_ns))
        self.last_release_ns = now_ns
        self._advance(now_ns)
        self._leased = max(0, self._leased - 1)

    def slots_after(self, parallel: int, skip_leases: int) -> dict[str, Any]:
        """`utilisation_sending` as `slots` measures it, over the window from the start of the (skip_leases+1)-th
        lease to the last lease, the first `skip_leases` leases left out: a client that asks something of the
        server before its work begins (chunkwise's token count of a sample of the rows, seconds before its
        first row) is measured from its first row. Finished leases only (read it once the client is done)."""
        ordered = sorted(self.leases)[skip_leases:]
        if not ordered:
            return {"skipped_leases": skip_leases, "first_lease_ns": None, "sending_s": 0.0,
                    "utilisation_sending": None, "window_s": 0.0, "last_release_ns": None, "utilisation": None}
        first, last = ordered[0][0], max(start for start, _ in ordered)
        released = max(end for _, end in ordered)
        busy = sum(max(0, min(end, last) - start) for start, end in ordered)
        sending, window = last - first, released - first
        whole = sum(end - start for start, end in ordered)
        return {"skipped_leases": skip_leases, "first_lease_ns": first, "sending_s": round(sending / 1e9, 3),
                "utilisation_sending": round(busy / (parallel * sending), 4) if sending > 0 else None,
                "window_s": round(window / 1e9, 3), "last_release_ns": released,
                "utilisation": round(whole / (parallel * window), 4) if window > 0 else None}

    def slots(self, parallel: int) -> dict[str, Any]:
        """Server-slot utilisation: leased slot time over parallel x (last release - first lease), the first
        lease's time (`time.perf_counter_ns`, for a benchmark's time to the first request); and
        `utilisation_sending`, the same from the first lease to the last one (while requests remained to be
        sent: a client's own share, without the final drain whose length is one answer's)."""
        if self.first_lease_ns is None or self.last_release_ns is None:
            return {"busy_s": 0.0, "window_s": 0.0, "utilisation": None, "sending_s": 0.0,
                    "utilisation_sending": None}
        window = self.last_release_ns - self.first_lease_ns
        sending = (self.last_lease_ns or self.first_lease_ns) - self.first_lease_ns
        return {"busy_s": round(self.slot_busy_ns / 1e9, 3), "window_s": round(window / 1e9, 3),
                "utilisation": round(self.slot_busy_ns / (parallel * window), 4) if window > 0 else None,
                # perf_counter_ns is CLOCK_MONOTONIC on Linux: comparable with another process's on this machine
                "first_lease_ns": self.first_lease_ns, "last_release_ns": self.last_release_ns,
                "sending_s": round(sending / 1e9, 3),
                "utilisation_sending": round(self.busy_at_last_lease_ns / (parallel * sending), 4)
                if sending > 0 else None,
                # mean slots leased in each second since the first lease (the last second may be partial)
                "occupancy_per_s": [round(ns / OCCUPANCY_BUCKET_NS, 1) for ns in self._occupancy_ns]}

    def record(self, endpoint: str, status: int | str) -> None:
        self.requests[endpoint][str(status)] += 1

    def receive(self, fingerprint: str) -> int:
        """Count a receipt; returns how many times this fingerprint was received before."""
        entry = self.fingerprints.get(fingerprint)
        if entry is None:
            entry = self.fingerprints[fingerprint] = [0, 0]
        entry[0] += 1
        self.received_total += 1
        return entry[0] - 1

    def answered(self, fingerprint: str) -> None:
        entry = self.fingerprints.setdefault(fingerprint, [0, 0])
        entry[1] += 1
        self.answered_total += 1
        if entry[1] == 2:
            self.answered_twice += 1
        if entry[1] > self.max_answered:
            self.max_answered = entry[1]

    def as_dict(self, fingerprints: bool = True, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": {ep: dict(sorted(by.items())) for ep, by in sorted(self.requests.items())},
            "faults": dict(self.faults),
            "loads": self.loads,
            "unloads": self.unloads,
            "context_shifts": self.context_shifts,
            "prompt_tokens": {"evaluated": self.prompt_tokens_evaluated, "cached": self.prompt_tokens_cached},
            "received_total": self.received_total,
            "answered_total": self.answered_total,
            "distinct_fingerprints": len(self.fingerprints),
            "max_answered_per_fingerprint": self.max_answered,
            "fingerprints_answered_more_than_once": self.answered_twice,
            **extra,
        }
        if fingerprints:
            out["fingerprints"] = {fp: {"received": r, "answered": a} for fp, (r, a) in self.fingerprints.items()}
        return out
