"""PostgreSQL restarted under a cluster run (simulator hosts): the loopback cluster of `make cluster-demo`
(PostgreSQL, a Prefect server on it, 2 simulated hosts with their `chunkwise worker`s), a distributed
`chunkwise run --pool`; once 60 answers are recorded PostgreSQL stops as a crash does (`pg_ctl stop -m
immediate`: no shutdown checkpoint, clients cut) and starts again on the same port and data after DOWN_S, as
its supervisor would. A parent that stops is run again with the same run name (README "Several GPU machines").
Needs root (PostgreSQL runs as its own user) and Debian's postgresql package.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.faults.common import (
    SIMULATOR,
    Ctx,
    Row,
    cluster_once_resent,
    cluster_receipts,
    first_record_after,
    ledger_count,
    lost,
    stops,
    wait_for,
    write_input,
)
from chunkwise.harness.cluster.local import SIM_ARGS, Cluster, cleanup_tree, make_base, start_cluster
from chunkwise.harness.cluster.postgres import PG_BIN, Postgres, as_pg

PARALLEL = 2  # the cluster's `--parallel`
N = 300
DOWN_S = 5.0


def restart(pg: Postgres) -> None:
    """Crash-stop, wait DOWN_S, start on the same port and data (the options of `start_postgres`)."""
    pg.stop()
    time.sleep(DOWN_S)
    r = as_pg(pg.os_user, [str(PG_BIN / "pg_ctl"), "-D", str(pg.data), "-w", "-t", "120", "-l", str(pg.data / "log"),
                           "-o", f"-h 127.0.0.1 -p {pg.port} -k {pg.data} -c fsync=off -c max_connections=200",
                           "start"])
    if r.returncode:
        raise RuntimeError(f"pg_ctl start failed: {r.stderr[-500:]}")


def parent_text(c: Cluster, name: str) -> str:
    path = c.base / f"parent-{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def family(ctx: Ctx) -> list[Row]:
    base = make_base()
    try:
        c = start_cluster(base, [[*SIM_ARGS, "--seed", str(k)] for k in range(2)])
        try:
            return [restarted(ctx, c)]
        finally:
            c.close()
    finally:
        cleanup_tree(base)


def restarted(ctx: Ctx, c: Cluster) -> Row:
    assert c.postgres is not None
    name = "pg-restart"
    inputs = ctx.tmp / "pg-inputs"
    inputs.mkdir()
    source, ids = write_input(inputs / f"{name}.parquet", N, name)
    run_dir: Path = c.shared / name
    before = cluster_receipts(c.hosts)
    parent = c.run_parent(source, name, "--shard-requests", "100", background=True)
    wait_for(lambda: parent.poll() is not None or ledger_count(run_dir) >= 60, 600, f"{name}: 60 answers")
    if parent.poll() is not None:
        raise RuntimeError(f"{name}: the run ended before the fault ({parent.returncode})")
    faulted = time.monotonic()
    restart(c.postgres)
    back = time.time()
    exits = [parent.wait(timeout=900)]
    stop_s = time.monotonic() - faulted
    texts = [parent_text(c, name)] if exits[0] else []
    if exits[0]:
        back = time.time()
        again = c.run_parent(source, name, "--shard-requests", "100", background=True)
        exits.append(again.wait(timeout=900))
    once, resent = cluster_once_resent(c.hosts, before)
    stop, stopped_lines = stops(texts)
    what = "ended" if exits[0] else "finished"
    return Row(f"PostgreSQL crash-stopped under a cluster run, back after {DOWN_S:g} s", SIMULATOR,
               "independent, cluster of 2 hosts", PARALLEL, N, once, resent, resent, lost(run_dir, ids), exits,
               first_record_after(run_dir, back), stop,
               [*stopped_lines, f"the parent {what} {stop_s:.0f} s after the fault"])
