"""`chunkwise run` itself killed or stopped: SIGKILL at ten seeded moments per mode, SIGTERM, SIGINT, and a
SIGTERM whose grace period runs out (simulator, in this process: the request-time kills fire from inside it).

The ten moments are tests/test_crash.py's (`tests.support.kills.kill_plan`): during start-up, in the middle of
a request (six times), while the last checkpoint is being written, twice during aggregation; each killed
session is followed by the next one (`chunkwise run` again or `chunkwise resume`), the last by a resume that
must finish. Re-sent per fault: requests received during the session after a kill that had been received
before it.
"""

from __future__ import annotations

import signal
import statistics
import time

import pytest

from bench.faults.common import (
    SIMULATOR,
    Ctx,
    Row,
    finish,
    first_record_after,
    ledger_count,
    lost,
    receipts,
    received,
    resent_per_session,
    run_args,
    run_env,
    session_text,
    spawn,
    stops,
    wait_for,
    write_input,
)
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from tests.support.kills import KillOnRequest, kill_plan

SEED = 20241126
N = 48
PARALLEL = 2
#: Answers of 30-60 tokens at 200 tokens/s per slot: a request is on the wire for 0.15-0.3 s.
SIM = SimOptions(answer_tokens=(30, 60), parallel=PARALLEL, decode_tps=200, seed=7)


def seeded_kills(ctx: Ctx, mode: str) -> Row:
    source, ids = write_input(ctx.tmp / f"kill-{mode}.parquet", N, f"kill-{mode}")
    out, log = ctx.tmp / "runs", ctx.tmp / f"kill-{mode}.log"
    run_dir = out / f"kill-{mode}"
    env = run_env(ctx)
    args = run_args(source, "", out, run_dir.name, mode=mode, parallel=PARALLEL, chunk_size=8)
    exits, deltas, recover = [], [], []
    with running_simulator(SIM) as sim, pytest.MonkeyPatch.context() as patch:
        args[args.index("--host") + 1] = sim.url
        killer = KillOnRequest(patch)
        before = received(sim.stats()["fingerprints"])
        sessions = [*kill_plan(SEED), ("end", None, "resume")]
        for k, (kind, arg, how) in enumerate(sessions):
            argv = args if how == "run" or not run_dir.exists() else ["resume", str(run_dir)]
            point = kind if kind in ("checkpoint", "results", "stats") else None
            started = time.time()
            proc = spawn(argv, env, log, kill_point=point)
            if kind == "request":
                killer.arm(proc, arg)
            elif kind == "after":
                time.sleep(arg)
                proc.kill()
            exits.append(finish(proc))
            killer.proc = None
            if kind == "request" and not killer.fired:
                raise RuntimeError(f"kill-{mode}: the session was to be killed at request {arg} but sent fewer")
            now = received(sim.stats()["fingerprints"])
            deltas.append(now - before)
            before = now
            waited = first_record_after(run_dir, started)
            if k and waited is not None:  # a re-run after a kill, working again
                recover.append(waited)
        once, _ = receipts(sim.stats()["fingerprints"])
    per_fault = resent_per_session(deltas)[:-1]
    killed = sum(1 for code in exits if code == -signal.SIGKILL)
    notes = [f"{killed} sessions killed by SIGKILL (moments: {', '.join(f'{k} {a}' if a else k for k, a, _ in sessions[:-1])}), "
             f"then `chunkwise resume` exited {exits[-1]}; requests each kill left unrecorded and a later session "
             f"sent again: {per_fault}; seconds from each re-run's start to its first new answer: {recover}"]
    return Row(f"SIGKILL of `chunkwise run` at 10 seeded moments ({mode})", SIMULATOR, mode, PARALLEL, N, once,
               sum(per_fault), max(per_fault), lost(run_dir, ids), exits,
               round(statistics.median(recover), 1) if recover else None, "-", notes)


def graceful(ctx: Ctx, signum: signal.Signals, grace_s: float | None = None) -> Row:
    """`signum` once the ledger holds 12 answers; exit 130 expected, then `chunkwise resume`."""
    n, name = 60, f"stop-{signum.name.lower()}{'-grace' if grace_s is not None else ''}"
    source, ids = write_input(ctx.tmp / f"{name}.parquet", n, name)
    out, log = ctx.tmp / "runs", ctx.tmp / f"{name}.log"
    run_dir = out / name
    extra = {} if grace_s is None else {"CHUNKWISE_STOP_GRACE_S": str(grace_s)}
    # 0.5-1 s per answer when the grace is short: requests are still generating when it ends
    options = SIM.updated({"port": 0, "parallel": 4, "decode_tps": 60 if grace_s is not None else 400})
    with running_simulator(options) as sim:
        proc = spawn(run_args(source, sim.url, out, name, parallel=4), run_env(ctx, **extra), log)
        wait_for(lambda: proc.poll() is not None or ledger_count(run_dir) >= 12, 300, f"{name}: 12 answers")
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: the run ended before it could be stopped ({proc.returncode})")
        proc.send_signal(signum)
        exits = [finish(proc)]
        stopped_text = session_text(log)
        wait_for(lambda: sim.stats(fingerprints=False)["in_flight"] == 0, 30, "the server to cancel")
        resumed = time.time()
        exits.append(finish(spawn(["resume", str(run_dir)], run_env(ctx), log)))
        once, resent = receipts(sim.stats()["fingerprints"])
    kind, lines = stops([stopped_text])
    what = f"{signum.name} to `chunkwise run`" + ("" if grace_s is None else f", grace period ({grace_s:g} s) exceeded")
    return Row(what, SIMULATOR, "independent", 4, n, once, resent, resent, lost(run_dir, ids), exits,
               first_record_after(run_dir, resumed), kind, lines)


def family(ctx: Ctx) -> list[Row]:
    return [seeded_kills(ctx, "independent"), seeded_kills(ctx, "conversation"),
            graceful(ctx, signal.SIGTERM), graceful(ctx, signal.SIGINT), graceful(ctx, signal.SIGTERM, 0.2)]
