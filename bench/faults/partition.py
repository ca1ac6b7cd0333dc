"""One host cut off by a network partition under a cluster run (simulator hosts).

The loopback cluster of `make cluster-demo` (PostgreSQL, a Prefect server on it, `chunkwise worker`s) with
host 2 on a network of its own (`chunkwise.harness.cluster.netns`): its simulator and its worker (and so
every shard flow that worker starts) run in a network namespace that reaches the Prefect API over a veth
pair; the API listens on the pair's outside address (with the cluster's basic authentication). Host 1, the
parent and PostgreSQL stay on this machine's network. Both hosts see the same shared storage (one
filesystem), as two machines mounting one NFS export do: this family cuts the network to the API only.

Every frame between the island and the API is dropped in silence (`Island.cut`) for CUT_S seconds, then the
link is healed, at two moments: while host 2 is sending a chunk (20 answers recorded), with Prefect's client
defaults and with a client that gives up within the cut (as it does within minutes with the defaults); and
the moment host 2's worker starts a shard's process, before that process reports Running. What must hold:
host 1 goes on with the shards it can pull; the cut host's shard, still able to reach its own simulator and
the shared storage, never sends a request another host sends (the chunk locks); whatever the cut host
could not finish is re-dispatched; the parent ends; nothing is lost. A parent that stops is run again with
the same run name (README "Several GPU machines"). Needs root (namespaces; PostgreSQL as its own user) and
Debian's postgresql package.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.faults.common import (
    SIMULATOR,
    Ctx,
    Row,
    cluster_once_resent,
    cluster_receipts,
    first_record_after,
    ledger_count,
    ledger_times,
    lost,
    stops,
    wait_for,
    write_input,
)
from chunkwise.cluster import hosts
from chunkwise.harness.cluster import netns
from chunkwise.harness.cluster.local import (
    SIM_ARGS,
    Cluster,
    Host,
    cleanup_tree,
    free_port,
    make_base,
    start_cluster,
    stop,
)
from chunkwise.store.layout import RunPaths
from tests.support.ui_helpers import descendants

PARALLEL = 2  # the cluster's `--parallel`
N = 200
SHARD_REQUESTS = 50
#: Seconds the island stays cut: past the parent's `shard_lost_after_s` (30 s).
CUT_S = 60.0
MODE = "independent, cluster of 2 hosts"
#: The cut host's Prefect clients in the second row: a 2 s request timeout and no retries give up on a silent
#: network after about 10 s a call (measured from inside a cut island), so its shard process gives up within a
#: 60 s cut as it does within 10-20 minutes with Prefect's defaults (60 s per try, 5 retries with 2-32 s of
#: back-off, per call; prefect 3.9.1 `client/base.py`), without the benchmark waiting that long.
IMPATIENT = {"PREFECT_API_REQUEST_TIMEOUT": "2", "PREFECT_CLIENT_MAX_RETRIES": "0"}
#: The parent's `shard_lost_after_s` in the third row (the cluster tests' 10 s; default 30 s): a run Pending
#: for 4 x that is taken for lost, 40 s instead of 120 s of benchmark time.
LOST_AFTER_S = "10"
#: Seconds after the heal past which a parent still running is taken for hung (the run takes 1-2 minutes).
HUNG_S = 300.0


@dataclass(frozen=True)
class Scenario:
    fault: str
    #: The cut host's worker environment (Prefect's client patience).
    worker_env: dict[str, str]
    #: When to cut: `chunk` (host 2 is sending a chunk, 20 answers recorded) or `start` (the moment host 2's
    #: worker starts a shard's process: the run is Pending, the process has not reported Running yet).
    at: str
    parent_env: dict[str, str] = field(default_factory=dict)


SCENARIOS = {
    "partition": Scenario(f"One host cut off by a network partition for {CUT_S:g} s under a cluster run", {},
                          "chunk"),
    "partition-long": Scenario(f"One host cut off by a network partition for {CUT_S:g} s, past its Prefect "
                               "client's patience (2 s timeout, no retries)", IMPATIENT, "chunk"),
    "partition-start": Scenario(f"One host cut off by a network partition for {CUT_S:g} s as its shard starts, "
                                "past its Prefect client's patience", IMPATIENT, "start",
                                {"CHUNKWISE_SHARD_LOST_AFTER_S": LOST_AFTER_S}),
}


def answers(host: Host) -> int:
    """Answers the host's simulator has written so far."""
    return sum(int(v["answered"]) for v in host.stats().get("fingerprints", {}).values())


def not_run(why: str) -> list[Row]:
    """The rows of a machine that cannot cut a host off: they say so in the table, with nothing measured."""
    return [Row(sc.fault, SIMULATOR, MODE, PARALLEL, N, 0, 0, 0, 0, [], None, "-", [f"not run: {why}"],
                not_run=why) for sc in SCENARIOS.values()]


def family(ctx: Ctx) -> list[Row]:
    try:
        island = netns.create()
    except netns.NetnsUnavailable as exc:
        return not_run(str(exc))
    base = make_base()
    try:
        c = start_cluster(base, [[*SIM_ARGS, "--seed", "0"]], api_host=island.outer_ip)
        try:
            cut_off = Host(name="host2", port=free_port(), sim_args=[*SIM_ARGS, "--seed", "1"],
                           address=island.inner_ip, prefix=island.prefix)
            c.hosts.append(cut_off)
            c.start_sim(cut_off)
            rows = []
            base_env = dict(c.env)
            for name, sc in SCENARIOS.items():
                stop(cut_off.worker)  # the island's worker with this row's Prefect settings
                cut_off.env = dict(sc.worker_env)
                c.start_worker(cut_off)
                c.env = {**base_env, **sc.parent_env}
                rows.append(partitioned(ctx, c, island, cut_off, name, sc))
            return rows
        finally:
            island.heal()
            c.close()
    finally:
        island.close()
        keep_logs(base, ctx.tmp / "partition-logs")
        cleanup_tree(base)


def keep_logs(base: Path, to: Path) -> None:
    """The cluster's logs (server, workers, simulators, parents) and each run's stats.json and host facts, into
    the matrix's scratch directory (`--keep` keeps it)."""
    to.mkdir(exist_ok=True)
    for path in [*base.glob("*.log"), *base.glob("shared/*/stats.json"), *base.glob("shared/*/hosts/*.jsonl")]:
        name = "-".join(path.relative_to(base).parts)
        with contextlib.suppress(OSError):
            shutil.copyfile(path, to / name)


def holds_a_chunk(run_dir: Path, label: str) -> bool:
    """Whether `label` is sending a chunk of the run now: a `chunk-start` fact of its own on shared storage
    that no closing `chunk` fact names yet (`chunkwise.cluster.hosts`)."""
    facts = hosts.read_facts(run_dir).get(hosts.safe_label(label), [])
    started = {f["id"] for f in facts if f.get("kind") == "chunk-start"}
    return bool(started - {f.get("closes") or f.get("id") for f in facts if f.get("kind") == "chunk"})


def distributed(run_dir: Path) -> dict[str, Any]:
    """stats.json's `distributed` section (shard attempts and their states), {} when there is none."""
    path = RunPaths(run_dir).stats
    if not path.exists():
        return {}
    section: dict[str, Any] = json.loads(path.read_text()).get("distributed") or {}
    return section


def moment(at: float, cut_at: float, healed: float) -> str:
    """`at` (Unix s) relative to the cut: `cut+12s`, `healed+31s`, `cut-5s`."""
    if at < cut_at:
        return f"cut-{cut_at - at:.0f}s"
    return f"cut+{at - cut_at:.0f}s" if at <= healed else f"healed+{at - healed:.0f}s"


def parent_text(c: Cluster, name: str) -> str:
    path = c.base / f"parent-{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def shard_process_started(host: Host) -> bool:
    """Whether the host's worker has a shard flow process (`python -m prefect.engine`) below it."""
    for pid in descendants(host.worker.pid) if host.worker is not None else []:
        with contextlib.suppress(OSError):
            if b"prefect.engine" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
    return False


def partitioned(ctx: Ctx, c: Cluster, island: netns.Island, cut_off: Host, name: str, sc: Scenario) -> Row:
    inputs = ctx.tmp / f"{name}-inputs"
    inputs.mkdir()
    source, ids = write_input(inputs / f"{name}.parquet", N, name)
    run_dir = c.shared / name
    before = cluster_receipts(c.hosts)
    args = ("--shard-requests", str(SHARD_REQUESTS))
    parent = c.run_parent(source, name, *args, background=True)
    if sc.at == "start":
        wait_for(lambda: parent.poll() is not None or shard_process_started(cut_off), 600,
                 f"{name}: host 2 starting a shard", interval_s=0.02)
    else:
        wait_for(lambda: parent.poll() is not None or (holds_a_chunk(run_dir, cut_off.name) and
                                                       ledger_count(run_dir) >= 20), 600, f"{name}: host 2 at work")
    if parent.poll() is not None:
        raise RuntimeError(f"{name}: the run ended before the fault ({parent.returncode})")
    host1_at_cut = answers(c.hosts[0])
    cut_at = time.time()
    island.cut()
    ended = None  # when the parent was seen to end during the cut (Unix s)
    try:
        deadline = time.monotonic() + CUT_S
        while time.monotonic() < deadline:
            if ended is None and parent.poll() is not None:
                ended = time.time()
            time.sleep(0.2)
    finally:
        island.heal()
    healed = time.time()
    host1_during = answers(c.hosts[0]) - host1_at_cut
    during = sum(1 for t in ledger_times(run_dir) if cut_at < t <= healed)
    hung = []
    try:
        exits = [parent.wait(timeout=HUNG_S)]
    except subprocess.TimeoutExpired:
        stop(parent)  # SIGTERM to its group, then SIGKILL
        exits = [parent.wait()]
        hung = [f"the parent was still waiting {HUNG_S:g} s after the heal: stopped (a shard run that never ends)"]
    finished = moment(ended if ended is not None else time.time(), cut_at, healed)
    texts = [parent_text(c, name)] if exits[0] and not hung else []
    recover_from = healed
    if exits[0] and not hung:
        recover_from = time.time()
        again = c.run_parent(source, name, *args, background=True)
        exits.append(again.wait(timeout=900))
    once, resent = cluster_once_resent(c.hosts, before)
    ended_how, stopped_lines = stops(texts)
    dist = distributed(run_dir)
    mine = {f["shard"] for f in hosts.read_facts(run_dir).get(hosts.safe_label(cut_off.name), [])
            if f.get("kind") == "chunk-start"}
    timeline = ["shard {}: {}".format(r["shard"], " > ".join(
        f"a{h['attempt']} {h['state']} {moment(h['at'], cut_at, healed)}" for h in r.get("history", [])))
        for r in dist.get("shard_runs", []) if r["shard"] in mine or r.get("attempts", 1) > 1]
    what = "ended" if exits[0] else "finished"
    notes = [*hung, *stopped_lines,
             f"answers recorded during the cut: {during} ({host1_during} by host 1, "
             f"{during - host1_during} by the cut-off host 2 from its own simulator)",
             f"shards re-dispatched: {dist.get('redispatched', 0)}; the parent's view of the cut host's "
             f"shards and of those re-dispatched: {'; '.join(timeline) or 'none'}",
             f"the parent {what} at {finished}"]
    return Row(sc.fault, SIMULATOR, MODE, PARALLEL, N, once, resent, resent, lost(run_dir, ids), exits,
               first_record_after(run_dir, recover_from), ended_how, notes)
