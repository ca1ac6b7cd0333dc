"""bench/results/fault_matrix.md (the table and each row's details) and fault_matrix.json (the rows, per family,
with when and where each family last ran: `python -m bench.faults FAMILY` refreshes one family's rows)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.faults.common import Row
from bench.procs import publish

RESULTS = Path(__file__).resolve().parents[1] / "results"
TABLE, ROWS = RESULTS / "fault_matrix.md", RESULTS / "fault_matrix.json"

HEAD = """# Fault matrix

Each fault injected into a real `chunkwise run` (a child process, as a user starts it), then the recovery the
README prescribes (run the same command again, or `chunkwise resume`). Definitions: bench/faults/common.py and
docs/faults.md. **against** says who answered: `simulator` (chunkwise's Ollama simulator, `chunkwise sim`:
every figure of such a row is a simulator figure), the real Ollama 0.24.0 of `make ollama` or the real
llama-server of `make engine` (both Gemma 3 270M on this machine's CPU). Re-sent is counted by the server side
(the simulator's per-fingerprint receipts, or a counting proxy in front of a server that is killed: its own
counters die with it). Goal: 0 lost, re-sent <= parallel per fault, one line (never a traceback) where the run
must stop. Times are wall-clock seconds on a shared machine (load under "When and where"): noisy; the other
columns are not. Run `make faults` (as root) to reproduce; `make faults FAULTS=kills` for one family.
"""


def exits_cell(codes: list[int]) -> str:
    """Exit codes in order, runs of one code folded: `-9 x10, 0`."""
    parts: list[list[int]] = []
    for code in codes:
        if parts and parts[-1][0] == code:
            parts[-1][1] += 1
        else:
            parts.append([code, 1])
    return ", ".join(f"{c}" if n == 1 else f"{c} x{n}" for c, n in parts)


def table(rows: list[Row]) -> list[str]:
    out = ["| fault | against | mode, parallel | total | answered once | re-sent (max/fault) | lost | exit codes | "
           "recover s | stop |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.not_run:
            out.append(f"| {r.fault} | {r.against} | {r.mode}, {r.parallel} | **not run on this machine**: "
                       f"{r.not_run} | | | | | | |")
            continue
        recover = "-" if r.recover_s is None else f"{r.recover_s:.1f}"
        out.append(f"| {r.fault} | {r.against} | {r.mode}, {r.parallel} | {r.total} | {r.answered_once} | "
                   f"{r.resent} ({r.resent_max}) | **{r.lost}** | {exits_cell(r.exits)} | {recover} | {r.stop} |")
    return out


def load_rows() -> dict[str, Any]:
    return json.loads(ROWS.read_text(encoding="utf-8")) if ROWS.exists() else {}


def where() -> str:
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}, load average {'{:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())}")


def write(results: dict[str, tuple[list[Row], float]], order: list[str], *, save: bool, total_s: float) -> None:
    """Merge the families just run into the saved ones and rewrite both files (`save`), or only print."""
    saved = load_rows()
    for name, (rows, seconds) in results.items():
        saved[name] = {"when": where(), "seconds": round(seconds), "rows": [asdict(r) for r in rows]}
    lines = [HEAD]
    every: list[Row] = []
    for name in [n for n in order if n in saved]:
        every += [Row(**r) for r in saved[name]["rows"]]
    lines += table(every)
    lines += ["", "## When and where", ""]
    for name in [n for n in order if n in saved]:
        lines.append(f"- `{name}`: {saved[name]['when']}; {saved[name]['seconds']} s.")
    if results.keys() == set(order):
        lines.append(f"- The whole matrix (`make faults`) took {total_s / 60:.0f} minutes.")
    lines += ["", "## Details", ""]
    for r in every:
        lines.append(f"- **{r.fault}** ({r.against}):")
        lines += [f"  - {note}" for note in r.notes]
    publish(lines, TABLE, write=save)
    if save:
        ROWS.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
