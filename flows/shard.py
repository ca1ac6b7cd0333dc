"""The shard flow: one shard of a distributed run on the host whose worker picked it up.

Preflight against this host's server (`chunkwise.cluster.preflight`: digest, num_ctx, CPU spill; a
refusal fails the shard at once, recorded for the per-host statistics), then the host's sending turn
(`chunkwise.cluster.turn`: a shard started ahead waits there for the one before it), then the shard's chunks, each
under its chunk lock with short retries, with the GPU sampler and `/api/ps` on this host. A chunk
another process holds is skipped; a chunk that keeps failing fails the shard so the parent moves it.
This file only orchestrates.
"""

from __future__ import annotations

import time
from typing import Any, cast

from prefect import flow, unmapped
from prefect.futures import PrefectConcurrentFuture
from prefect.task_runners import ThreadPoolTaskRunner

from chunkwise.cluster import hosts
from chunkwise.cluster.preflight import check_host
from chunkwise.cluster.shard import host_label, load_context
from chunkwise.cluster.telemetry import HostTelemetry
from chunkwise.cluster.turn import Remaining, free_slots, sending_turn
from chunkwise.cluster.worker import leave_note
from chunkwise.errors import HostUnusable
from chunkwise.logs import quiet_own_stops
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.plan.shards import load_recorded
from chunkwise.results.statsdoc import StatsDoc
from chunkwise.run.prepare import PreparedRun
from chunkwise.run.session import RunSession, chunk_workers, largest
from chunkwise.settings import get_settings
from chunkwise.store import chunklock
from chunkwise.store.confine import run_dir_inside
from chunkwise.store.files import apply_umask
from chunkwise.store.records import ChunkSummary
from tasks.shard_chunk import shard_chunk_task

FLOW_NAME = "chunkwise-shard"


@flow(name=FLOW_NAME, description="One shard of a distributed chunkwise run, on the host that picked it up.",
      validate_parameters=True)
def shard(run_dir: str, shard: int, attempt: int = 0) -> dict[str, Any]:
    started = time.time()
    quiet_own_stops()  # a shard stopped by chunkwise's own error logs no traceback (a bug still does)
    # `run_dir` is whatever the flow run's creator wrote: inside this host's runs root, or nothing is read
    run_dir_inside(get_settings().runs_root_path(), run_dir)
    apply_umask()
    ctx = load_context(run_dir)
    label = host_label()
    # Held for this run's whole life: the parent reads a free lock under a Running state as a dead process.
    chunklock.try_acquire_path(chunklock.shard_lock_path(ctx.dir, shard, attempt))
    record = {"kind": "shard", "shard": shard, "attempt": attempt, "endpoint": ctx.host, "started": started}
    specs = load_recorded(ctx.dir, shard)
    session = RunSession(ctx)  # closed below; the shard holds no run lock, its chunks hold chunk locks
    try:
        check = check_host(session.backend, session.client, ctx.host, model=ctx.params.model, digest=ctx.model_digest,
                           num_ctx=ctx.params.num_ctx)
    except HostUnusable as exc:
        hosts.append_fact(ctx.dir, label, {**record, "at": time.time(), "outcome": "refused", "error": str(exc),
                                           "busy_s": time.time() - started})
        if get_settings().worker_notes:  # so `chunkwise worker` stops pulling shards this host would refuse
            leave_note(str(get_settings().worker_notes), ctx.params.model, ctx.model_digest, str(exc))
        session.close()
        raise
    outcome, results, sending_from = "failed", list[ChunkSummary](), started
    telemetry = HostTelemetry(ctx, session.backend, session.client, hosts.host_dir(ctx.dir, label))
    try:
        # Sized for this run on this host, as the batch flow does: a conversation holds a worker for its whole
        # length, so a host with more slots than the settings' pool needs more workers to keep them busy.
        workers = chunk_workers(ctx.params, get_settings(), largest(specs))
        # the turn is given up before the telemetry's closing reads, so the next shard starts sending at once
        # and its expected end is kept for the worker, which takes the next shard when that end is near
        remaining = Remaining([s.size for s in specs])
        with (telemetry, sending_turn(get_settings().worker_turn, lambda: free_slots(session.slots) > 0,
                                      remaining=remaining) as waited,
              ThreadPoolTaskRunner[Any](max_workers=workers) as runner):
            sending_from = time.time()
            record.update({"turn_waited_s": round(waited, 3), "sending_from": sending_from})
            futures = runner.map(shard_chunk_task, {"session": unmapped(session), "spec": specs,
                                                    "label": unmapped(label), "shard": unmapped(shard),
                                                    "attempt": unmapped(attempt)})
            # mypy reads Prefect 3.9's typing of these mapped futures as futures of futures: each is a
            # PrefectConcurrentFuture, whose thread's future says when its chunk ended, and its result is the
            # chunk's summary
            remaining.start([cast(PrefectConcurrentFuture[Any], f).wrapped_future.done for f in futures])
            results = [cast(ChunkSummary, f.result()) for f in futures]
        outcome = "completed"
        return {"shard": shard, "attempt": attempt, "host": label, "chunks": results}
    finally:
        hosts.append_fact(ctx.dir, label, {**record, "at": time.time(), "outcome": outcome, "digest": check.digest,
                                           # a shard started ahead is busy from its turn, not while it waits
                                           "busy_s": time.time() - sending_from,
                                           "gpu_peak_mib": telemetry.gpu_peak_mib,
                                           "ollama_ps": telemetry.ps_record(),
                                           "skipped": [r["index"] for r in results if r.get("skipped")]})
        session.close()


def run_shards(prepared: PreparedRun, specs: list[ChunkSpec], pool: str) -> StatsDoc:
    """The parent's distributed mode (called by the batch flow with `pool` set): record the run's
    context and shards in the shared run directory, launch or re-attach to one shard run per shard on
    `pool`'s queues, re-dispatch shards that end with chunks unsent, then aggregate as a single-host
    run does, with one row per host in stats.json and a hosts artifact. The batch flow's session
    holds the run's lock meanwhile."""
    from prefect.artifacts import create_table_artifact

    from chunkwise.cluster.pace import rest_planner
    from chunkwise.cluster.parent import supervise
    from chunkwise.cluster.shard import chunk_done, credit_dead_holders, write_context
    from chunkwise.plan.shards import load_or_write
    from tasks.aggregate import aggregate
    from tasks.dispatch import PrefectDispatcher

    ctx = prepared.ctx
    started = time.time()
    write_context(ctx)
    shards = load_or_write(ctx.dir, specs, ctx.params.shard_requests, ctx.params.shard_seconds, ctx.params.parallel)
    dispatcher = PrefectDispatcher(str(ctx.dir), ctx.dir.name, pool=pool)
    tracks = supervise(ctx.dir.name, shards, dispatcher, lambda i: chunk_done(ctx.dir, i),
                       alive=lambda s, a: chunklock.is_held(chunklock.shard_lock_path(ctx.dir, s.index, a)),
                       lost_after_s=get_settings().shard_lost_after_s,
                       extend=rest_planner(ctx.dir, ctx.params.shard_seconds, ctx.params.parallel))
    credit_dead_holders(ctx.dir, [s.index for s in specs])
    rows = hosts.host_rows(ctx.dir)
    summary = {"hosts": rows, "distributed": {
        "pool": pool, "shards": len(tracks), "wall_s": round(time.time() - started, 3),
        "redispatched": sum(t.attempt for t in tracks),
        "shard_runs": [{"shard": t.shard.index, "attempts": t.attempt + 1, "history": t.history} for t in tracks]}}
    stats = aggregate(ctx, len(specs), summary)
    if rows:
        create_table_artifact([{k: v for k, v in r.items() if k != "endpoint"} for r in rows],
                              key="chunkwise-hosts", description=f"chunkwise run {ctx.dir.name}: per host")
    return stats
