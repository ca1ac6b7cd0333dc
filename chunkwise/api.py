"""The Python API: `chunkwise.run(...)` and `chunkwise.plan(...)`, the same runs and plans as the commands, with
the same parameters (`RunParams`, which the CLI's flags and the Prefect form also fill) and typed results.

    import chunkwise

    plan = chunkwise.plan(input_path="requests.parquet", model="llama3.1:8b")   # nothing is sent
    print(plan.chunk_count, plan.fits, plan.render())
    result = chunkwise.run(input_path="requests.parquet", model="llama3.1:8b")
    result.results        # Path of results.parquet; result.exit_code as the command's (0, 1, 2, 130)

Give a `RunParams`, or its fields as keywords (checked by `RunParams`: a wrong name or value raises pydantic's
`ValidationError`). A run that cannot start raises its `chunkwise.errors.SetupError` (one line, `exit_code`
2); a run that started always returns, its `exit_code` saying how it ended. Calling `run` again with the same
input and options resumes the run (as the same command does). `chunkwise.run` and `chunkwise.plan` are these
two functions (`from chunkwise.api import run, plan` gives them with their types to a type checker).

In the main thread a run installs the graceful-stop handlers for its duration (Ctrl-C stops new requests and
keeps every answer) and restores the previous ones afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkwise.params import RunParams
from chunkwise.plan.figures import Plan
from chunkwise.results.statsdoc import StatsDoc
from chunkwise.store.layout import RunPaths

__all__ = ["Plan", "RunParams", "RunResult", "plan", "run"]


@dataclass(frozen=True)
class RunResult:
    """How a run ended: `exit_code` as the command's (0 all answered, 1 some failed or rejected, 2 stopped by
    a server error or configuration, 130 interrupted; every answer is kept and the run resumes), its
    directory, its `results.parquet` (present when the run finished) and its statistics (None when it
    stopped before the end)."""

    exit_code: int
    run_dir: Path
    stats: StatsDoc | None

    @property
    def results(self) -> Path:
        return RunPaths(self.run_dir).results

    @property
    def ok(self) -> bool:
        """Every request answered."""
        return self.exit_code == 0


def _params(params: RunParams | None, fields: dict[str, Any]) -> RunParams:
    if params is None:
        return RunParams(**fields)
    return params.model_copy(update=fields) if fields else params


def _prepare_process() -> None:
    """What the `chunkwise` command does before any command (`chunkwise.cli.main`): no calls home, the
    settings read once, private files, the Prefect credential."""
    from chunkwise.cli import secure_process
    from chunkwise.commands.prefect_env import no_calls_home

    no_calls_home()
    secure_process()


def run(params: RunParams | None = None, /, *, say: Callable[[str], object] | None = None,
        **fields: Any) -> RunResult:
    """Run (or resume) a batch; see the module docstring. `say` receives the lines the command would print
    (default: print; `lambda line: None` keeps it quiet)."""
    from chunkwise.commands.runner import execute
    from chunkwise.store.layout import run_paths

    chosen = _params(params, fields)
    _prepare_process()
    resolved: list[RunParams] = []
    handlers = ({s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        code, stats = execute(chosen, print if say is None else say, resolved=resolved)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    final = resolved[0] if resolved else chosen
    return RunResult(code, run_paths(final.output_dir, final.run_name or "").root, stats)


def plan(params: RunParams | None = None, /, *, kv_cache_type: str = "f16", prefill_tps: float | None = None,
         decode_tps: float | None = None, **fields: Any) -> Plan:
    """The plan of a run without sending a request (`chunkwise plan`): chunks, token estimates, the KV cache
    and whether it fits, an ETA when the server's rates are given (tokens/s of the whole server)."""
    from chunkwise.plan.make import make_plan

    chosen = _params(params, fields)
    _prepare_process()
    return make_plan(chosen, kv_cache_type=kv_cache_type, prefill_tps=prefill_tps, decode_tps=decode_tps)
