"""What every fault family shares: the matrix row, the children it starts, and how a row's figures are read.

Figures (the column definitions of bench/results/fault_matrix.md):

* total: input rows (one request each; in conversation mode one turn each).
* answered once: requests the server answered exactly once (a complete `done: true` answer written).
* re-sent: requests the server received more than once (per request fingerprint, /sim/stats or the counting
  proxy), summed over the row's faults; `max/fault` is the most after any one fault (goal: <= parallel).
* lost: input rows without a recorded answer in results.parquet after the recovery the README prescribes
  (re-run the same command, or `chunkwise resume`): neither `ok` nor `output_truncated` (the server's whole
  answer, recorded as it came: Gemma 3 270M, a base-sized model, often runs to `num_predict`). Stricter than
  "no final record": a row recorded as failed for any other reason counts as lost here.
* exit codes: of every `chunkwise run`/`resume` process of the row, in order (-9 = killed by SIGKILL).
* recover s: from the end of the fault (the server back, the command re-run, the disk freed) to the first
  answer recorded after it (the ledger's `_t`): how long until the run is working again.
* stop: how a run that had to stop said so: `one line` (the last line `chunkwise run: ...`, nothing else
  after the run started but log lines), `traceback` (a Python traceback anywhere in its output), `-` (it did
  not stop).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from bench.procs import RUN_ROOTS
from chunkwise.store.ledger import STAMP, decode_line
from tests.support.ui_helpers import wait_for as poll_until

REPO = Path(__file__).resolve().parents[2]
SIMULATOR = "simulator"


@dataclass
class Row:
    fault: str
    against: str
    mode: str
    parallel: int
    total: int
    answered_once: int
    resent: int
    resent_max: int
    lost: int
    exits: list[int]
    recover_s: float | None
    stop: str
    #: The lines a stopped run ended with, and what else the reader should know (the details section).
    notes: list[str] = field(default_factory=list)
    #: Why the fault could not be injected on this machine (nothing measured; the table says so): "" when it ran.
    not_run: str = ""


@dataclass
class Ctx:
    """Where a family works: `tmp` (scratch, removed afterwards) and `api_url`, a `make server`-style Prefect
    API shared by the families that do not test Prefect itself (saves a temporary API start per process)."""

    tmp: Path
    api_url: str
    prefect_home: Path


def run_env(ctx: Ctx | None, home: Path | None = None, **extra: str) -> dict[str, str]:
    """A `chunkwise run` child's environment: the shared Prefect API (none: the run starts its temporary one),
    its own Prefect home, the benchmark's run roots, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHUNKWISE_", "OLLAMA_"))}
    env.update(RUN_ROOTS, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PYTHONUNBUFFERED="1",
               PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
               PYTHONPATH=str(REPO))
    if ctx is not None:
        env.update(PREFECT_API_URL=ctx.api_url, PREFECT_HOME=str(home or ctx.prefect_home))
    elif home is not None:
        env["PREFECT_HOME"] = str(home)
    env.update(extra)
    return env


def spawn(args: list[str], env: Mapping[str, str], log: Path, *, kill_point: str | None = None) -> subprocess.Popen[bytes]:
    """`python -m chunkwise ARGS` (or `tests.support.crash_child POINT ARGS`), output appended to `log`."""
    entry = ["-m", "tests.support.crash_child", kill_point] if kill_point else ["-m", "chunkwise"]
    with open(log, "ab") as out:
        out.write(f"\n$ chunkwise {' '.join(args)}\n".encode())
        out.flush()
        return subprocess.Popen([sys.executable, *entry, *args], cwd=REPO, env=dict(env), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 900) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise


def session_text(log: Path) -> str:
    """The output of the last command appended to `log`."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.rsplit("\n$ chunkwise ", 1)[-1]


def ending(text: str) -> tuple[str, str]:
    """(`one line` or `traceback`, the last `chunkwise CMD:` line) of a stopped session's output."""
    lines = [line for line in text.splitlines() if line.startswith("chunkwise ")]
    last = lines[-1] if lines else (text.strip().splitlines() or [""])[-1]
    return ("traceback" if "Traceback (most recent call last)" in text else "one line"), last


def stops(texts: Iterable[str]) -> tuple[str, list[str]]:
    """The worst `ending` over the sessions that stopped, and their last lines."""
    kinds, lines = set(), []
    for text in texts:
        kind, line = ending(text)
        kinds.add(kind)
        lines.append(line)
    return ("traceback" if "traceback" in kinds else "one line" if kinds else "-"), lines


def cluster_receipts(hosts: Iterable[Any]) -> dict[str, Counter[str]]:
    """{'received': per fingerprint, 'answered': per fingerprint}, summed over the simulators of a cluster's
    hosts (each a `chunkwise.harness.cluster.local.Host`)."""
    out: dict[str, Counter[str]] = {"received": Counter(), "answered": Counter()}
    for host in hosts:
        for fp, v in host.stats().get("fingerprints", {}).items():
            out["received"][fp] += v["received"]
            out["answered"][fp] += v["answered"]
    return out


def cluster_once_resent(hosts: Iterable[Any], before: dict[str, Counter[str]]) -> tuple[int, int]:
    """(requests answered exactly once, requests received more than once) by the cluster's simulators since
    `before` (a `cluster_receipts`)."""
    after = cluster_receipts(hosts)
    received = {fp: after["received"][fp] - before["received"][fp] for fp in after["received"]}
    answered = {fp: after["answered"][fp] - before["answered"][fp] for fp in after["answered"]}
    return sum(1 for v in answered.values() if v == 1), sum(1 for v in received.values() if v > 1)


def receipts(fingerprints: Mapping[str, Mapping[str, int]]) -> tuple[int, int]:
    """(answered exactly once, received more than once) over `{fingerprint: {received, answered}}`."""
    once = sum(1 for v in fingerprints.values() if v["answered"] == 1)
    return once, sum(1 for v in fingerprints.values() if v["received"] > 1)


def resent_per_session(deltas: list[Mapping[str, int]]) -> list[int]:
    """`deltas[s]`: receipts per fingerprint during session `s`. Per session, the requests it left unrecorded that
    a later session sent again (attributed to the last session that had sent it: that session's fault lost its
    answer), plus those it sent twice itself: what each session's ending cost."""
    cost, last = [0] * len(deltas), {}
    for s, delta in enumerate(deltas):
        for fp, n in delta.items():
            if n > 0:
                if fp in last or n > 1:
                    cost[last.get(fp, s)] += 1
                last[fp] = s
    return cost


def received(fingerprints: Mapping[str, Mapping[str, int]]) -> Counter[str]:
    return Counter({fp: v["received"] for fp, v in fingerprints.items()})


#: Failure classes whose row holds the server's whole answer (not lost).
ANSWERED_CLASSES = ("output_truncated",)


def lost(run_dir: Path, ids: Iterable[str]) -> int:
    """Input ids without an answer in results.parquet (all of them when it is missing): `ok`, or one of
    ANSWERED_CLASSES."""
    ids = list(ids)
    path = run_dir / "results.parquet"
    if not path.exists():
        return len(ids)
    rows = pl.read_parquet(path, columns=["id", "status", "error_class"])
    answered = rows.filter((pl.col("status") == "ok") | pl.col("error_class").is_in(ANSWERED_CLASSES))
    have = set(answered["id"].cast(pl.String))
    return sum(1 for i in ids if str(i) not in have)


def truncated(run_dir: Path) -> int:
    """Rows recorded `output_truncated` (answered, but cut at num_predict)."""
    path = run_dir / "results.parquet"
    if not path.exists():
        return 0
    return pl.read_parquet(path, columns=["error_class"]).filter(pl.col("error_class") == "output_truncated").height


def ledger_times(run_dir: Path) -> list[float]:
    """The write time (`_t`, Unix s) of every valid ledger line of the run."""
    times = []
    for path in (run_dir / "ledger").glob("chunk-*.jsonl") if (run_dir / "ledger").is_dir() else []:
        for line in path.read_bytes().splitlines(keepends=True):
            record = decode_line(line)
            if record is not None and STAMP in record:
                times.append(float(record[STAMP]))
    return times


def ledger_count(run_dir: Path) -> int:
    return len(ledger_times(run_dir))


def first_record_after(run_dir: Path, at: float) -> float | None:
    """Seconds from `at` (Unix s) to the first answer recorded after it, or None."""
    later = [t for t in ledger_times(run_dir) if t > at]
    return round(min(later) - at, 1) if later else None


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """The tests' poll (AssertionError on timeout), at a finer interval: recover times are measured with it."""
    return poll_until(predicate, timeout_s, what, interval_s)


def write_input(path: Path, n: int, salt: str, words: int = 20) -> tuple[Path, list[str]]:
    """`n` distinct requests (the salt keeps fingerprints apart between rows sharing one server)."""
    ids = [f"{salt}-{i:04d}" for i in range(n)]
    prompts = [f"{salt} request {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(words)) for i in range(n)]
    pl.DataFrame({"id": ids, "prompt": prompts}).write_parquet(path, row_group_size=64)
    return path, ids


def run_args(source: Path, host: str, out: Path, name: str, *, mode: str = "independent", parallel: int = 2,
             chunk_size: int = 10, extra: Iterable[str] = ()) -> list[str]:
    return ["run", "--input", str(source), "--host", host, "--output-dir", str(out), "--run-name", name,
            "--mode", mode, "--parallel", str(parallel), "--chunk-size", str(chunk_size), "--num-ctx", "2048",
            "--num-predict", "128", "--system-prompt", "You are terse.", *extra]
