"""One host cut off by a network partition under a cluster run (simulator hosts).

The loopback cluster of `make cluster-demo` (PostgreSQL, a Prefect server on it, `chunkwise worker`s) with
host 2 on a network of its own (`chunkwise.harness.cluster.netns`): its simulator and its worker (and so
every shard flow that worker starts) run in a network namespace that reaches the Prefect API over a veth
pair; the API listens on the pair's outside address (with the cluster's basic authentication). Host 1, the
parent and PostgreSQL stay on this machine's network. Both hosts see the same shared storage (one
filesystem), as two machines mounting one NFS export do; this row cuts the network to the API only.

Once host 2 is sending a chunk and 20 answers are recorded, every frame between the island and the API is
dropped in silence (`Island.cut`) for CUT_S seconds, then the link is healed. What must hold: host 1 goes on
with the shards it can pull; the cut host's shard, still able to reach its own simulator and the shared
storage, never sends a request host 1 sends (the chunk locks); whatever the cut host could not finish is
re-dispatched; nothing is lost. A parent that stops is run again with the same run name (README "Several
GPU machines"). Needs root (namespaces; PostgreSQL as its own user) and Debian's postgresql package.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.faults.common import (
    SIMULATOR,
    Ctx,
    Row,
    ending,
    first_record_after,
    ledger_count,
    ledger_times,
    lost,
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

PARALLEL = 2  # the cluster's `--parallel`
N = 300
SHARD_REQUESTS = 50
#: Seconds the island stays cut: past the parent's `shard_lost_after_s` (30 s).
CUT_S = 45.0
MODE = "independent, cluster of 2 hosts"
#: The cut host's Prefect clients in the second row: a 5 s request timeout and 2 retries give up on a silent
#: network after about 20 s, so a 45 s cut outlasts them as a cut of 7 minutes or more outlasts Prefect's
#: defaults (60 s per try, 5 retries with 2-32 s back-off; prefect 3.9.1 `client/base.py`), without making
#: the benchmark wait that long.
IMPATIENT = {"PREFECT_API_REQUEST_TIMEOUT": "5", "PREFECT_CLIENT_MAX_RETRIES": "2"}
SCENARIOS = {
    "partition": (f"One host cut off by a network partition for {CUT_S:g} s under a cluster run", {}),
    "partition-long": (f"One host cut off by a network partition for {CUT_S:g} s, longer than its Prefect client "
                       "waits (5 s x 3 tries)", IMPATIENT),
}


def receipts(every: list[Host]) -> dict[str, Counter[str]]:
    """{'received': per fingerprint, 'answered': per fingerprint}, summed over the hosts' simulators."""
    out: dict[str, Counter[str]] = {"received": Counter(), "answered": Counter()}
    for host in every:
        for fp, v in host.stats().get("fingerprints", {}).items():
            out["received"][fp] += v["received"]
            out["answered"][fp] += v["answered"]
    return out


def answers(host: Host) -> int:
    """Answers the host's simulator has written so far."""
    return sum(int(v["answered"]) for v in host.stats().get("fingerprints", {}).values())


def not_run(why: str) -> list[Row]:
    """The rows of a machine that cannot cut a host off: they say so in the table, with nothing measured."""
    return [Row(fault, SIMULATOR, MODE, PARALLEL, N, 0, 0, 0, 0, [], None, "-", [f"not run: {why}"], not_run=why)
            for fault, _ in SCENARIOS.values()]


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
            for name, (fault, env) in SCENARIOS.items():
                stop(cut_off.worker)  # the island's worker with this row's Prefect settings
                cut_off.env = dict(env)
                c.start_worker(cut_off)
                rows.append(partitioned(ctx, c, island, cut_off, name, fault))
            return rows
        finally:
            island.heal()
            c.close()
    finally:
        island.close()
        cleanup_tree(base)


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


def parent_text(c: Cluster, name: str) -> str:
    path = c.base / f"parent-{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def partitioned(ctx: Ctx, c: Cluster, island: netns.Island, cut_off: Host, name: str, fault: str) -> Row:
    inputs = ctx.tmp / f"{name}-inputs"
    inputs.mkdir()
    source, ids = write_input(inputs / f"{name}.parquet", N, name)
    run_dir = c.shared / name
    before = receipts(c.hosts)
    args = ("--shard-requests", str(SHARD_REQUESTS))
    parent = c.run_parent(source, name, *args, background=True)
    wait_for(lambda: parent.poll() is not None or (holds_a_chunk(run_dir, cut_off.name) and
                                                   ledger_count(run_dir) >= 20), 600, f"{name}: host 2 at work")
    if parent.poll() is not None:
        raise RuntimeError(f"{name}: the run ended before the fault ({parent.returncode})")
    host1_at_cut = answers(c.hosts[0])
    cut_at = time.time()
    island.cut()
    try:
        deadline = time.monotonic() + CUT_S
        while time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.5)
    finally:
        island.heal()
    healed = time.time()
    host1_during = answers(c.hosts[0]) - host1_at_cut
    during = sum(1 for t in ledger_times(run_dir) if cut_at < t <= healed)
    exits = [parent.wait(timeout=900)]
    finished_s = time.time() - healed
    texts = [parent_text(c, name)] if exits[0] else []
    if exits[0]:
        healed = time.time()
        again = c.run_parent(source, name, *args, background=True)
        exits.append(again.wait(timeout=900))
    after = receipts(c.hosts)
    received = {fp: after["received"][fp] - before["received"][fp] for fp in after["received"]}
    answered = {fp: after["answered"][fp] - before["answered"][fp] for fp in after["answered"]}
    once = sum(1 for v in answered.values() if v == 1)
    resent = sum(1 for v in received.values() if v > 1)
    kinds = [ending(t) for t in texts]
    stop = "traceback" if any(k == "traceback" for k, _ in kinds) else "one line" if kinds else "-"
    dist = distributed(run_dir)
    redispatched = [(r["shard"], [h["state"] for h in r.get("history", [])]) for r in dist.get("shard_runs", [])
                    if r.get("attempts", 1) > 1]
    what = "ended" if exits[0] else "finished"
    notes = [*(line for _, line in kinds),
             f"answers recorded during the cut: {during} ({host1_during} by host 1, "
             f"{during - host1_during} by the cut-off host 2 from its own simulator)",
             f"shards re-dispatched: {dist.get('redispatched', 0)}"
             + "".join(f"; shard {s}: {' > '.join(h)}" for s, h in redispatched),
             f"the parent {what} {finished_s:.0f} s after the link was healed"]
    return Row(fault, SIMULATOR, MODE, PARALLEL, N, once, resent, resent, lost(run_dir, ids), exits,
               first_record_after(run_dir, healed), stop, notes)
