"""The simulator answers like a real Ollama 0.24.0, request for request (issue 18 item 4).

The catalogue (tests/support/ollama_catalogue.py: 55 requests in order, and a full-queue scenario) was
sent to a real Ollama 0.24.0 built from source, serving gemma3-270m, and each answer reduced to what
must agree: status, media type, the JSON key sets at every nesting level with their value types, and
the behaviour values (`done_reason`, error texts, roles, /api/show's model_info and details, ...),
never the model's prose or the token counts. Those summaries are committed in
tests/fixtures/ollama-0.24.0/ (`make ollama-fixtures` records them again).

- pure tier: the simulator in its 0.24.0 era answers the same catalogue; every difference from the
  fixtures must be in `ALLOWED`, and every `ALLOWED` entry must still occur (a fixed difference leaves
  the list);
- live tier (`ollama`, slow): the same against the running real Ollama from `make ollama`, and the
  real answers against the fixtures (stale fixtures fail).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from tests.support.ollama_catalogue import (
    FIXTURES,
    PROBES,
    QUEUE_SIM_OPTIONS,
    SIM_OPTIONS,
    compare,
    difference_key,
    queue_scenario,
    read_fixture,
    run_catalogue,
)

NAMES = [probe.name for probe in PROBES] + ["queue_full"]

#: Differences the simulator keeps on purpose: probe -> {where the difference is: why}. Each entry is
#: checked to still occur.
ALLOWED: dict[str, dict[str, str]] = {
    # The simulator must never pass for a real server (sim/__init__.py): /api/version says so.
    "version": {"shape.simulator": "the simulator marks itself in /api/version"},
}


@pytest.fixture(scope="module")
def simulated() -> dict[str, dict[str, Any]]:
    """The simulator's summaries of the whole catalogue, as the fixtures were recorded: one fresh server
    for the catalogue, another with one slot and max_queue 1 for the queue scenario."""
    with running_simulator(SimOptions(**SIM_OPTIONS)) as sim:
        out = {probe.name: summary for probe, summary in run_catalogue(sim.url)}
    with running_simulator(SimOptions(**QUEUE_SIM_OPTIONS)) as sim:
        out["queue_full"] = queue_scenario(sim.url)
    return out


def unexplained(name: str, real: dict[str, Any], sim: dict[str, Any]) -> list[str]:
    """The differences not in ALLOWED, and ALLOWED entries of `name` that did not occur."""
    diffs = compare(real, sim)
    allowed = ALLOWED.get(name, {})
    found = {difference_key(d) for d in diffs}
    return ([d for d in diffs if difference_key(d) not in allowed]
            + [f"{key}: allowed ({why}) but no longer different" for key, why in allowed.items() if key not in found])


def test_the_catalogue_covers_the_issue_and_every_fixture_is_used():
    assert len(NAMES) >= 30
    recorded = {path.stem for path in Path(FIXTURES).glob("*.json")}
    assert recorded == set(NAMES), "run `make ollama-fixtures` after changing the catalogue"
    assert set(ALLOWED) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_simulator_answers_like_the_recorded_ollama(name, simulated):
    assert unexplained(name, read_fixture(name), simulated[name]) == []


def test_a_difference_is_reported_with_its_place():
    """The comparison itself: a changed status, a missing key, another error text are all found."""
    real = read_fixture("chat_unknown_model")
    assert compare(real, real) == []
    changed = {**real, "status": 400, "shape": {}, "values": {"error": "another text"}}
    keys = {difference_key(d) for d in compare(real, changed)}
    assert keys == {"status", "shape.error", "values.error"}


@pytest.mark.ollama
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_simulator_answers_like_the_running_ollama(simulated):
    """Live: the real Ollama from `make ollama` against the simulator and against the fixtures."""
    from chunkwise.harness.ollama_server.server import running_ollama
    from tests.support.ollama_fixture import require_ollama

    require_ollama()
    with running_ollama(1) as server:
        real = {probe.name: summary for probe, summary in run_catalogue(server.url)}
    with running_ollama(1, max_queue=1) as server:
        real["queue_full"] = queue_scenario(server.url)
    against_sim = {name: unexplained(name, real[name], simulated[name]) for name in NAMES}
    stale = {name: compare(read_fixture(name), real[name]) for name in NAMES}
    assert {k: v for k, v in against_sim.items() if v} == {}
    assert {k: v for k, v in stale.items() if v} == {}, "the fixtures are stale: run `make ollama-fixtures`"
