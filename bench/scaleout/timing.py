"""Figures from a finished run: the hosts' facts (`hosts/*.jsonl`, epoch s) and the shard runs' states
on the Prefect server, plus the server's API latency sampled while the run goes on."""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.procs import Sampler


def facts(run_dir: Path) -> list[dict[str, Any]]:
    """Every fact of every host's log, with `_file` naming the log (the host's label)."""
    out = []
    for path in (run_dir / "hosts").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                out.append({**json.loads(line), "_file": path.stem})
            except json.JSONDecodeError:
                continue
    return out


def chunk_to_chunk(all_facts: list[dict[str, Any]]) -> list[float]:
    """Per host, from the last chunk of one shard run to the first chunk of its next (s): the time the
    host's server got nothing from this run between two shards."""
    spans: dict[str, dict[tuple[int, int], list[float]]] = {}
    for f in all_facts:
        if f.get("kind") in ("chunk-start", "chunk") and "shard" in f:
            span = spans.setdefault(f["_file"], {}).setdefault((f["shard"], f.get("attempt", 0)), [f["at"], f["at"]])
            if f["kind"] == "chunk-start":
                span[0] = min(span[0], f["at"])
            else:
                span[1] = max(span[1], f["at"])
    gaps = []
    for runs in spans.values():
        ordered = sorted(runs.values())
        gaps += [max(0.0, b[0] - a[1]) for a, b in pairwise(ordered)]
    return gaps


def shard_timing(run_dir: Path) -> dict[str, Any]:
    """Window, idle between shards, lead-in and tail from the hosts' shard facts (epoch s)."""
    every = facts(run_dir)
    shards = [f for f in every if f["kind"] == "shard" and "started" in f]
    start, end = min(f["started"] for f in shards), max(f["at"] for f in shards)
    window = end - start
    by_host: dict[str, list[dict[str, Any]]] = {}
    for f in shards:
        by_host.setdefault(f["_file"], []).append(f)
    leads, last_ends, each = [], [], []
    for runs in by_host.values():
        runs.sort(key=lambda f: f["started"])
        # a shard started ahead (chunkwise/cluster/turn.py) sends from its turn, not from its start
        each += [max(0.0, b.get("sending_from", b["started"]) - a["at"]) for a, b in pairwise(runs)]
        leads.append(runs[0]["started"] - start)
        last_ends.append(max(f["at"] for f in runs))
    wide = chunk_to_chunk(every)
    requests = sum(f["requests"] for f in every if f["kind"] == "chunk")
    return {"window_s": window, "idle_between": sum(each) / (window * len(by_host)), "lead_in_s": max(leads),
            "idle_chunks": sum(wide) / (window * len(by_host)), "chunk_gap_mean_s": statistics.mean(wide) if wide else None,
            "tail_s": end - min(last_ends), "gap_mean_s": statistics.mean(each) if each else None,
            "shard_mean_s": statistics.mean(f["at"] - f["started"] for f in shards), "requests": requests,
            "hosts_used": len(by_host), "shards_per_host": sorted(len(r) for r in by_host.values()),
            "busy_share": {h: sum(f["at"] - f["started"] for f in r) / window for h, r in sorted(by_host.items())}}


def api(url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    """A JSON request to the Prefect API; `headers` carry the credential (`Cluster.auth_headers`)."""
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def gap_breakdown(api_url: str, run_name: str, run_dir: Path,
                  headers: dict[str, str] | None = None) -> dict[str, float] | None:
    """Where a host's time between two shards goes (means over the run's gaps, s), from the hosts'
    facts and the shard flow runs' state timestamps: `report` = the flow body's end to its run's
    final state on the server; `pickup` = that final state to the next run's Pending (the process
    exits, the worker polls); `spawn` = Pending to Running (process start, imports, Prefect's engine);
    `enter` = Running to the flow body's first line."""
    def ts(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    runs = api(f"{api_url}/flow_runs/filter", {"flow_runs": {"name": {"like_": f"{run_name}-shard-"}}, "limit": 200},
               headers)
    by_name = {}
    for run in runs:
        states = api(f"{api_url}/flow_run_states/?flow_run_id={run['id']}", None, headers)
        first: dict[str, float] = {}
        for state in sorted(states, key=lambda x: x["timestamp"]):
            first.setdefault(state["type"], ts(state["timestamp"]))
        by_name[run["name"]] = first
    parts: dict[str, list[float]] = {"report": [], "pickup": [], "spawn": [], "enter": []}
    by_host: dict[str, list[dict[str, Any]]] = {}
    for f in facts(run_dir):
        if f["kind"] == "shard" and "started" in f:
            by_host.setdefault(f["_file"], []).append(f)
    for shards in by_host.values():
        shards.sort(key=lambda f: f["started"])
        for a, b in pairwise(shards):
            sa = by_name.get(f"{run_name}-shard-{a['shard']:04d}-a{a['attempt']}", {})
            sb = by_name.get(f"{run_name}-shard-{b['shard']:04d}-a{b['attempt']}", {})
            end = sa.get("COMPLETED") or sa.get("FAILED")
            if end is None or "PENDING" not in sb or "RUNNING" not in sb:
                continue
            parts["report"].append(end - a["at"])
            parts["pickup"].append(sb["PENDING"] - end)
            parts["spawn"].append(sb["RUNNING"] - sb["PENDING"])
            parts["enter"].append(b["started"] - sb["RUNNING"])
    return {k: statistics.mean(v) for k, v in parts.items()} if parts["spawn"] else None


class ApiProbe(Sampler):
    """POST /flow_runs/filter (limit 50) every 0.5 s while the run goes on: the Prefect server's API
    latency under the cluster's load (the parent polls the shards' states, workers poll the pool,
    shard flows report task runs)."""

    def __init__(self, api_url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.url, self.ms = api_url, []  # type: ignore[var-annotated]
        self.headers = headers or {}

    def _loop(self) -> None:
        body = json.dumps({"limit": 50}).encode()
        while not self._stop.is_set():
            t = time.perf_counter()
            req = urllib.request.Request(f"{self.url}/flow_runs/filter", data=body,
                                         headers={"Content-Type": "application/json", **self.headers})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    resp.read()
                self.ms.append((time.perf_counter() - t) * 1000)
            except OSError:
                self.ms.append(float("inf"))
            self._stop.wait(0.5)

    def quantiles(self) -> tuple[float, float, float]:
        """(p50, p95, max) ms."""
        ms = sorted(self.ms) or [float("nan")]
        return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))], ms[-1]
