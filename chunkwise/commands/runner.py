"""Running the batch flow from a process that owns the terminal (the CLI, the demo).

It checks everything before Prefect starts (so configuration mistakes are one-line messages with
exit code 2, not flow tracebacks), installs the graceful-stop handlers, runs the flow, and maps how
it ended to an exit code (`chunkwise.errors`).

Graceful stop: the first Ctrl-C or SIGTERM stops new requests; in-flight ones may finish for
`stop_grace_s` seconds; every answered request is already in the ledger, so the run exits 130 and
resumes where it stopped. A second signal, or the grace period running out, exits at once (130).
Each `execute` has its own stop flag, handed to the flow's `RunSession` through
`chunkwise.run.session.stop_requests`.

Head start: once the checks passed, the run's first chunks are sent from here, by the flow's own chunk code,
while Prefect's API comes up (`chunkwise.run.headstart`); the flow adopts them (`head_starts`).
"""

from __future__ import annotations

import contextvars
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chunkwise.cli import fail
from chunkwise.commands import expected_errors
from chunkwise.commands.display import run_with_display
from chunkwise.errors import EXIT_INTERRUPTED, SetupError, exit_code_for
from chunkwise.params import RunParams
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.results.statsdoc import StatsDoc
from chunkwise.run.headstart import HeadStart, head_starts
from chunkwise.run.prepare import PreparedRun, plan_run, prepare_run
from chunkwise.run.session import stop_requests
from chunkwise.settings import get_settings
from chunkwise.store.layout import RunPaths


def preflight(params: RunParams) -> RunParams:
    """Check input, configuration, server and run directory; return params with the run name fixed."""
    return preflight_plan(params)[0]


def preflight_plan(params: RunParams) -> tuple[RunParams, int, int]:
    """`preflight`, plus the number of requests to answer and of chunks (for the progress display)."""
    prepared, specs, _ = preflight_run(params)
    return prepared.ctx.params, sum(s.stop - s.start for s in specs), len(specs)


def preflight_run(params: RunParams) -> tuple[PreparedRun, list[ChunkSpec], dict[str, Any]]:
    """Every check before a request is sent: the prepared run, its chunks and the manifest to write."""
    prepared = prepare_run(params)
    specs, manifest = plan_run(prepared, write=False)
    return prepared, specs, manifest


def begin_head_start(prepared: PreparedRun, specs: list[ChunkSpec], manifest: dict[str, Any],
                     stop: threading.Event, first_sent: threading.Event) -> HeadStart | None:
    """Start sending before Prefect's flow starts (`chunkwise.run.headstart`); None (and `first_sent` set) for a
    distributed run (its shards run on the pool's workers) or a run with nothing left to send."""
    if prepared.ctx.params.pool or RunPaths(prepared.ctx.dir).all_checkpointed(s.index for s in specs):
        first_sent.set()
        return None
    return HeadStart.begin(prepared, specs, manifest, stop=stop, first_sent=first_sent)


def install_stop_handlers(stop: threading.Event, grace_s: float, say: Callable[[str], object] = print) -> None:
    """SIGINT and SIGTERM set `stop` (the run sends nothing new); a second one, or `grace_s` seconds
    after the first, exits the process at once with 130."""

    def hard_exit() -> None:
        say(f"in-flight requests did not finish within {grace_s:g} s; exiting now (resumable)")
        os._exit(EXIT_INTERRUPTED)

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        say(f"{signal.Signals(signum).name}: no new requests; waiting up to {grace_s:g} s for in-flight ones "
            "(signal again to exit now)")
        timer = threading.Timer(grace_s, hard_exit)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_off_main_thread(fn: Any, *args: Any) -> Any:
    """Call `fn(*args)` in a worker thread (in a copy of this context) while the main thread waits.

    Prefect's flow engine, when it runs in the main thread, replaces the SIGTERM handler with one
    that raises `TerminationSignal` at once (`prefect.utilities.engine.capture_sigterm`): the flow
    unwinds while requests are in flight, the HTTP client is closed under them and the exit code
    is 1. Off the main thread Prefect cannot install that handler, so SIGTERM, like Ctrl-C, reaches
    the graceful handler above and the main thread stays free to run it.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            box["error"] = exc

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name="chunkwise-flow", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["value"]


def execute(
    params: RunParams, say: Callable[[str], object] = print, *, command: str = "run",
    resolved: list[RunParams] | None = None,
) -> tuple[int, StatsDoc | None]:
    """Run the flow; returns (exit code, stats or None). A run that cannot start raises its
    `SetupError` (the CLI prints it); a run that stopped is reported here, as `command`'s error.
    `resolved` receives the params as checked (the run's name fixed: `chunkwise.api.run`)."""
    from chunkwise.commands.early_api import EarlyApi
    from chunkwise.prefect_auth import check_configured_api, check_environment_api

    check_environment_api()  # a server refusing this credential: one line before the run directory is touched
    # Set once the head start has begun the first chunk (or there is none): Prefect is imported here only then
    first_sent = threading.Event()
    api = EarlyApi(after=first_sent).start()  # Prefect's temporary API starts alongside the checks and the sending
    try:
        prepared, specs, manifest = preflight_run(params)  # nothing is sent before every check has passed
    except BaseException:
        api.cancel()
        raise
    params = prepared.ctx.params
    requests_total, chunks_total = sum(s.stop - s.start for s in specs), len(specs)
    if resolved is not None:
        resolved.append(params)
    say_resuming(prepared.ctx.dir, say)  # before the head start writes this session into the manifest
    stop = threading.Event()
    install_stop_handlers(stop, get_settings().stop_grace_s, say)
    head = begin_head_start(prepared, specs, manifest, stop, first_sent)
    try:
        api.wait()
        check_configured_api()  # also an API configured in a Prefect profile, or the temporary one
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        expected_errors.install()  # a purposeful ending is one line, not Prefect's traceback
        from flows.batch import batch  # imported by EarlyApi's thread once the head start began; here only joined

        # the flow runs in a copy of this context (run_off_main_thread): it finds the stop flag and the head start
        tokens = stop_requests.set(stop), head_starts.set(head)
        try:
            stats = run_with_display(prepared.ctx.dir, params.run_name or "", requests_total, chunks_total,
                                     run_off_main_thread, batch, params)
        except SetupError:
            raise
        except BaseException as exc:  # noqa: BLE001 - every ending maps to an exit code
            fail(command, f"run {params.run_name} stopped: {expected_errors.describe(exc)}")
            return exit_code_for(exc), None
        finally:
            stop_requests.reset(tokens[0])
            head_starts.reset(tokens[1])
    finally:
        if head is not None:
            head.close()  # closed by the flow when it ran; else (the flow never ran) it stops sending here
    requests = stats["requests"]
    if requests["rejected"]:
        say(f"{requests['rejected']} rows were rejected before sending (reasons in results.parquet and "
            f"{RunPaths(Path(stats['run']['dir'])).rejects}); fix them in the input to have them answered")
    return exit_code_for(None, requests["failed"] + requests["rejected"]), stats


def say_resuming(run_dir: Path, say: Callable[[str], object]) -> None:
    """On a run that exists already (the same command again, or `resume`): what it has recorded, so the
    user sees that nothing recorded is sent again."""
    if not RunPaths(run_dir).manifest.exists():
        say(f"run {run_dir.name}: new, in {run_dir} (the same command again resumes it)")
        return
    from chunkwise.results.status import run_status

    status = run_status(run_dir)
    failed = f", {status.failed:,} failed (sent again only with --retry-failed)" if status.failed else ""
    say(f"run {run_dir.name}: resuming: {status.ok:,} of {status.total - status.rejected:,} requests already "
        f"answered{failed}, {status.pending:,} to send")


def print_summary(stats: StatsDoc, say: Callable[[str], object] = print) -> None:
    from chunkwise.results.stats import stats_table

    width = max(len(row["metric"]) for row in stats_table(stats))
    for row in stats_table(stats):
        say(f"  {row['metric']:<{width}}  {row['value']}")
    say(f"  results: {stats['run']['results']}")
    say(f"  stats:   {RunPaths(Path(stats['run']['dir'])).stats}")

