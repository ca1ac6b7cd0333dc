"""Per-host accounting in distributed mode: which host sent which requests, and for how long.

A chunk is sent by one host at a time (`chunkwise.store.chunklock`), so while a shard holds chunk
*i*'s lock every ledger line appended to `ledger/chunk-i.jsonl` is this host's. The shard counts the
valid ledger records before it runs the chunk and takes the records after that count once the chunk
ends (finished or failed): exact attribution with no field added to the ledger, and a torn line
repaired by `Ledger.load` changes nothing (only invalid lines are dropped).

Each host appends its facts to `<run dir>/hosts/<label>.jsonl` (one writer per label: the worker
name), one line per chunk attempt and one per shard; `host_rows` sums them into the per-host rows of
`stats.json`, which add up to the session's totals of requests sent.

A process that dies inside a chunk (killed with its stopping worker, or its machine lost) never writes
that chunk's closing fact. So each holder first writes a `chunk-start` fact with the record count it
found; the next holder of the chunk (or the parent before it aggregates) finds starts nobody closed
and credits their hosts with the records between each such start and the next holder's count.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from chunkwise.store.files import ensure_dir
from chunkwise.store.layout import RunPaths
from chunkwise.store.ledger import decode_line

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_label(label: str) -> str:
    """A host label usable as a file name (worker names may hold any character)."""
    return _SAFE.sub("-", label).strip(".-")[:100] or "host"


def host_dir(run_dir: Path, label: str) -> Path:
    return RunPaths(Path(run_dir)).hosts_dir / safe_label(label)


def valid_records(ledger_path: Path) -> list[dict[str, Any]]:
    """Every valid ledger record, in file order (torn or corrupt lines skipped)."""
    try:
        raw = ledger_path.read_bytes()
    except FileNotFoundError:
        return []
    records = (decode_line(line) for line in raw.splitlines(keepends=True))
    return [r for r in records if r is not None and "_row" in r]


def chunk_facts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Counts over the ledger records one host appended for a chunk: requests sent (answered or
    failed), ok, tokens in and out."""
    return {
        "requests": len(records),
        "ok": sum(1 for r in records if r.get("status") == "ok"),
        "prompt_tokens": sum(int(r.get("prompt_eval_count") or 0) for r in records),
        "output_tokens": sum(int(r.get("eval_count") or 0) for r in records),
    }


def append_fact(run_dir: Path, label: str, fact: dict[str, Any]) -> None:
    """Append one fact line durably to the host's log (write + fsync)."""
    path = host_dir(run_dir, label).with_suffix(".jsonl")
    ensure_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(fact, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def open_chunk(run_dir: Path, label: str, chunk: int, before: int, **extra: Any) -> str:
    """Record that `label` holds `chunk`, finding `before` valid ledger records; returns the start id
    its closing fact must carry."""
    start_id = f"{safe_label(label)}:{os.getpid()}:{chunk}:{time.time_ns()}"
    append_fact(run_dir, label, {"kind": "chunk-start", "id": start_id, "chunk": chunk, "before": before,
                                 "at": time.time(), **extra})
    return start_id


def credit_orphans(run_dir: Path, writer: str, chunk: int, records: list[dict[str, Any]]) -> int:
    """Credit the hosts whose processes died holding `chunk` with the records they appended: the
    caller holds the chunk's lock (or the run is over), and `records` are the ledger's valid records
    now. Written to `writer`'s log with `host` naming the credited host; returns the records credited."""
    starts, closed = [], set()
    for label, facts in read_facts(run_dir).items():
        for f in facts:
            if f.get("chunk") != chunk:
                continue
            if f.get("kind") == "chunk-start":
                starts.append((f["before"], f["id"], label))
            elif f.get("kind") == "chunk":
                closed.add(f.get("closes") or f.get("id"))
    orphans = sorted(s for s in starts if s[1] not in closed)
    credited = 0
    for i, (before, start_id, label) in enumerate(orphans):
        end = orphans[i + 1][0] if i + 1 < len(orphans) else len(records)
        mine = records[before:end]
        append_fact(run_dir, writer, {"kind": "chunk", "host": label, "closes": start_id, "chunk": chunk,
                                      "at": time.time(), "orphan": True, **chunk_facts(mine)})
        credited += len(mine)
    return credited


def read_facts(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every host's facts, by label (a torn last line is skipped)."""
    out: dict[str, list[dict[str, Any]]] = {}
    folder = RunPaths(Path(run_dir)).hosts_dir
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        facts = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                facts.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        out[path.stem] = facts
    return out


def latest_ps(shards: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The host's last `/api/ps` record of the run's model (`chunkwise.cluster.telemetry.ps_fields`):
    the latest shard's end snapshot, else its start one; None when no shard saw the model loaded."""
    for fact in sorted(shards, key=lambda f: f.get("at", 0), reverse=True):
        ps = fact.get("ollama_ps") or {}
        if ps.get("end") or ps.get("start"):
            return dict(ps.get("end") or ps["start"])
    return None


def host_rows(run_dir: Path, *, since: float = 0.0) -> list[dict[str, Any]]:
    """Per-host rows for stats.json from the facts recorded at or after `since` (epoch seconds: the
    parent session's start): requests, ok, tokens, busy seconds (shard wall time), req/s over busy
    time, shards completed and refused, GPU peak (MiB; None without a GPU), the host's `/api/ps` view of
    the model (`ollama_ps`; `cpu_spill` when any shard saw size_vram < size there) and the digest check."""
    rows = []
    by_file = read_facts(run_dir)
    every = [(f.get("host") or label, f) for label, facts in by_file.items() for f in facts if f.get("at", 0) >= since]
    labels = sorted({host for host, f in every if f.get("kind") in ("chunk", "shard")})
    for label in labels:
        chunks = [f for host, f in every if host == label and f.get("kind") == "chunk"]
        shards = [f for host, f in every if host == label and f.get("kind") == "shard"]
        busy = sum(float(f.get("busy_s") or 0) for f in shards)
        requests = sum(f["requests"] for f in chunks)
        peaks = [f["gpu_peak_mib"] for f in shards if f.get("gpu_peak_mib") is not None]
        digests = sorted({f["digest"] for f in shards if f.get("digest")})
        rows.append({
            "host": label,
            "endpoint": next((f["endpoint"] for f in reversed(shards) if f.get("endpoint")), None),
            "requests": requests,
            "ok": sum(f["ok"] for f in chunks),
            "prompt_tokens": sum(f["prompt_tokens"] for f in chunks),
            "output_tokens": sum(f["output_tokens"] for f in chunks),
            "busy_s": round(busy, 3),
            "req_per_s": round(requests / busy, 3) if busy > 0 else None,
            "shards": sum(1 for f in shards if f.get("outcome") == "completed"),
            "shards_refused": sum(1 for f in shards if f.get("outcome") == "refused"),
            "shards_failed": sum(1 for f in shards if f.get("outcome") == "failed"),
            "gpu_peak_mib": max(peaks) if peaks else None,
            "ollama_ps": latest_ps(shards),
            "cpu_spill": any((f.get("ollama_ps") or {}).get(when) and f["ollama_ps"][when].get("cpu_spill")
                             for f in shards for when in ("start", "end")),
            "digest_check": "refused: " + "; ".join(f["error"] for f in shards if f.get("outcome") == "refused")[:300]
            if any(f.get("outcome") == "refused" for f in shards) else ("ok" if digests else None),
        })
    return rows
