"""How many requests a run keeps in flight, against what the server states (`--parallel N|auto`).

`auto` takes the server's own slot count (`ServerFacts.slots`, read by its backend), and so does a run that
leaves `--parallel` out, as the default num_ctx follows the server's context (`RunParams.with_server_context`);
where the server states none (Ollama, vLLM) the run keeps `parallel`, and says so when `auto` asked for more.
A number the user gave is never overridden: where the server states a different count the run says which
way it loses (too few in flight leave slots idle, too many queue on the server and time out together).
"""

from __future__ import annotations

from typing import NamedTuple

from chunkwise.backend import ServerFacts
from chunkwise.params import MAX_PARALLEL, RunParams


class Resolved(NamedTuple):
    """The run's parameters with `parallel` resolved, and a line for the log (None: nothing to say),
    a warning when `warn` (the user's number or `auto` could not be honoured as asked)."""

    params: RunParams
    note: str | None = None
    warn: bool = False


def resolve_parallel(params: RunParams, facts: ServerFacts) -> Resolved:
    """`parallel` for this server (see the module docstring); requests in flight are capped at `MAX_PARALLEL`."""
    from_server = params.parallel_auto or "parallel" not in params.model_fields_set
    if from_server and facts.slots is not None:
        slots = min(facts.slots, MAX_PARALLEL)
        how = "--parallel auto" if params.parallel_auto else "--parallel (not given)"
        note = f"{how}: {slots} requests in flight ({facts.slots_source})"
        if slots < facts.slots:
            note += f"; the server states {facts.slots}, chunkwise sends at most {MAX_PARALLEL}"
        return Resolved(params.model_copy(update={"parallel": slots}), note)
    if params.parallel_auto:  # and the server states no count
        return Resolved(params, f"--parallel auto: {facts.slots_source or 'the server states no slot count'}; "
                                f"keeping --parallel {params.parallel}: pass --parallel N (the server's slot "
                                "count) to send more or fewer at once", warn=True)
    if from_server or facts.slots is None or facts.slots == params.parallel:
        return Resolved(params)
    if params.parallel < facts.slots:
        return Resolved(params, f"--parallel {params.parallel} leaves {facts.slots - params.parallel} of the "
                                f"server's {facts.slots} slots idle ({facts.slots_source}); --parallel auto uses "
                                "them all", warn=True)
    return Resolved(params, f"--parallel {params.parallel} is above the server's {facts.slots} slots "
                            f"({facts.slots_source}): {params.parallel - facts.slots} requests wait in its queue "
                            "at any time; --parallel auto matches it", warn=True)
