"""The results file: its head, one section per part, and the table cells the parts share."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chunkwise.harness.cluster.local import SIM_ARGS

OUT = Path(__file__).parent.parent / "results" / "scaleout.md"
HEAD = [
    "# Distributed mode on one machine (simulated hosts)",
    "",
    "**Simulator figures.** Every process (PostgreSQL, the Prefect server, the parent, the workers, the shard",
    "flow processes and the `chunkwise sim` hosts) shares this machine's 2 cores with other developers' work;",
    "the figures show chunkwise's and Prefect's overheads, not a GPU's speed. Simulated hosts run",
    f"`chunkwise sim {' '.join(SIM_ARGS)}` (real-time rates: 2 slots, ~0.3 s per short answer, about 6 req/s",
    "per host). Each section is one `python -m bench.scaleout --part NAME` invocation; see the package docstring",
    "(bench/scaleout/__init__.py) for the definitions. Sections whose title carries a date are earlier runs,",
    "kept as history; `make bench` (every part with its defaults, about 25 minutes) replaces the others.",
    "",
]


def load() -> str:
    """The load average (1, 5, 15 min), written before and after each part."""
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def section(label: str, command: str, load_before: str, body: list[str]) -> list[str]:
    return [f"## {label}", "", f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores. "
            f"Command: `{command}`. Load average before: {load_before}; after: {load()}.", "", *body, ""]


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def api_cell(r: dict[str, Any]) -> str:
    p50, p95, top = r["api_ms"]
    return f"{p50:.0f} / {p95:.0f} / {top:.0f}"


def parts_cell(r: dict[str, Any]) -> str:
    g = r.get("gap_parts")
    return "n/a" if not g else " / ".join(f"{g[k]:.1f}" for k in ("report", "pickup", "spawn", "enter"))
