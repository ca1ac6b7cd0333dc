"""Time and work per session of a run (a start, and every resume after a crash or a stop).

A session starts at its manifest entry's `started_at`. It ends at its `ended_at` (set when the run
finishes, and refreshed by the progress heartbeat while it runs), or -- for a session that was
killed before its last heartbeat -- at its last ledger line, whichever is later: every ledger line
carries the time it was written (`chunkwise.store.ledger.STAMP`). A line belongs to the session
whose start precedes it most closely. Rates divide each session's requests by that session's own
active time, and the whole run's by the sum, so a resume neither loses the crashed session's time
nor counts the time the run spent stopped.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from datetime import datetime
from pathlib import Path
from typing import Any

from chunkwise.store.ledger import STAMP, decode_line


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def ledger_stamps(ledger_dir: Path) -> list[float]:
    """The write time of every valid ledger line of the run (Unix seconds), lines without one left out."""
    stamps: list[float] = []
    try:
        names = sorted(os.listdir(ledger_dir))
    except FileNotFoundError:
        return stamps
    for name in names:
        if not name.endswith(".jsonl"):
            continue
        with open(ledger_dir / name, "rb") as handle:
            for line in handle:
                record = decode_line(line)
                if record is not None and isinstance(record.get(STAMP), (int, float)):
                    stamps.append(float(record[STAMP]))
    return stamps


def session_figures(manifest: dict[str, Any], ledger_dir: Path) -> dict[str, Any]:
    """Per-session and whole-run active time (s), requests finished and requests/s."""
    sessions = manifest.get("sessions", [])
    starts = [_epoch(s.get("started_at")) or 0.0 for s in sessions]
    counts = [0] * len(sessions)
    last: list[float | None] = [None] * len(sessions)
    for stamp in ledger_stamps(ledger_dir):
        index = bisect_right(starts, stamp) - 1
        if index < 0:
            continue  # written before the first recorded session: no session to charge it to
        counts[index] += 1
        last[index] = stamp if last[index] is None else max(last[index] or stamp, stamp)
    rows = []
    for i, session in enumerate(sessions):
        start = starts[i]
        ends = [e for e in (_epoch(session.get("ended_at")), last[i]) if e is not None]
        end = max(ends) if ends else start
        active = max(end - start, 0.0)
        rows.append({
            "started_at": session.get("started_at"),
            "ended_at": session.get("ended_at"),
            # where the session's end came from: its own record, or (a killed session) its last ledger line
            "end_from": "ledger" if last[i] is not None and last[i] == end and end != _epoch(session.get("ended_at"))
            else "manifest",
            "active_seconds": round(active, 3),
            "requests_finished": counts[i],
            "requests_per_s": round(counts[i] / active, 3) if active > 0 else None,
        })
    total_active = sum(r["active_seconds"] for r in rows)
    total = sum(counts)
    return {
        "sessions": rows,
        "active_seconds": round(total_active, 3),
        "requests_finished": total,
        "requests_per_s": round(total / total_active, 3) if total_active > 0 else None,
    }
