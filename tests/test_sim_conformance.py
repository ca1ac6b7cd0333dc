"""The simulator answers like a real Ollama 0.24.0 and 0.33.0, request for request (issue 18 items 4 and 7).

The catalogue (tests/support/ollama_catalogue.py: 55 requests in order, and a full-queue scenario) was
sent to a real Ollama built from source, serving gemma3-270m, and each answer reduced to what must
agree: status, media type, the JSON key sets at every nesting level with their value types, and the
behaviour values (`done_reason`, error texts, roles, /api/show's model_info and details, ...), never
the model's prose or the token counts. Those summaries are committed per version in
tests/fixtures/ollama-<version>/ (`make ollama-fixtures [OLLAMA_VERSION=0.33.0]` records them again):
0.24.0 (Go runners, its own ggml) and 0.33.0 (llama-server from llama.cpp 4df29be4f, the llama-cpp-python
0.3.35 sdist's, where Ollama pins b10488: where an answer's text comes from llama-server, it is
4df29be4f's).

- pure tier: the simulator in each version's era answers the same catalogue; every difference from the
  fixtures must be in `ALLOWED[version]`, and every entry must still occur (a fixed difference leaves
  the list);
- live tiers: the same against the running real Ollama, and the real answers against the fixtures
  (stale fixtures fail): 0.24.0 (`ollama`, from `make ollama`, in `make test`) and 0.33.0
  (`ollama_next`, from `make ollama-next`, in `make test-ollama-next`).
"""

from __future__ import annotations

from typing import Any

import pytest

from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from tests.support.ollama_catalogue import (
    PROBES,
    VERSIONS,
    compare,
    difference_key,
    fixtures_dir,
    queue_scenario,
    queue_sim_options,
    read_fixture,
    run_catalogue,
    sim_options,
)

NAMES = [probe.name for probe in PROBES] + ["queue_full"]

#: The simulator must never pass for a real server (sim/__init__.py): /api/version says so.
MARKED = {"version": {"shape.simulator": "the simulator marks itself in /api/version"}}
#: Differences the simulator keeps on purpose, per version: probe -> {where the difference is: why}. Each
#: entry is checked to still occur.
ALLOWED: dict[str, dict[str, dict[str, str]]] = {
    "0.24.0": {**MARKED},
    "0.33.0": {**MARKED},
}

_SIMULATED: dict[str, dict[str, dict[str, Any]]] = {}


def simulated(version: str) -> dict[str, dict[str, Any]]:
    """The simulator's summaries of the whole catalogue in `version`'s era, as the fixtures were recorded:
    one fresh server for the catalogue, another with one slot and max_queue 1 for the queue scenario.
    Computed once per version for the module."""
    if version not in _SIMULATED:
        with running_simulator(SimOptions(**sim_options(version))) as sim:
            out = {probe.name: summary for probe, summary in run_catalogue(sim.url)}
        with running_simulator(SimOptions(**queue_sim_options(version))) as sim:
            out["queue_full"] = queue_scenario(sim.url)
        _SIMULATED[version] = out
    return _SIMULATED[version]


def unexplained(version: str, name: str, real: dict[str, Any], sim: dict[str, Any]) -> list[str]:
    """The differences not in ALLOWED[version], and its entries of `name` that did not occur."""
    diffs = compare(real, sim)
    allowed = ALLOWED[version].get(name, {})
    found = {difference_key(d) for d in diffs}
    return ([d for d in diffs if difference_key(d) not in allowed]
            + [f"{key}: allowed ({why}) but no longer different" for key, why in allowed.items() if key not in found])


@pytest.mark.parametrize("version", VERSIONS)
def test_the_catalogue_covers_the_issue_and_every_fixture_is_used(version):
    assert len(NAMES) >= 30
    recorded = {path.stem for path in fixtures_dir(version).glob("*.json")}
    assert recorded == set(NAMES), f"run `make ollama-fixtures OLLAMA_VERSION={version}` after changing the catalogue"
    assert set(ALLOWED[version]) <= set(NAMES)


@pytest.mark.parametrize(("version", "name"), [(v, n) for v in VERSIONS for n in NAMES])
def test_the_simulator_answers_like_the_recorded_ollama(version, name):
    assert unexplained(version, name, read_fixture(name, fixtures_dir(version)), simulated(version)[name]) == []


def test_a_difference_is_reported_with_its_place():
    """The comparison itself: a changed status, a missing key, another error text are all found."""
    real = read_fixture("chat_unknown_model")
    assert compare(real, real) == []
    changed = {**real, "status": 400, "shape": {}, "values": {"error": "another text"}}
    keys = {difference_key(d) for d in compare(real, changed)}
    assert keys == {"status", "shape.error", "values.error"}


def live_check(version: str) -> None:
    """The real Ollama `version` (built by its make target) against the simulator and the fixtures."""
    from chunkwise.harness.ollama_server.paths import ollama_paths
    from chunkwise.harness.ollama_server.server import running_ollama
    from tests.support.ollama_fixture import require_ollama

    paths = ollama_paths(version=version)
    require_ollama(paths)
    with running_ollama(1, paths=paths) as server:
        real = {probe.name: summary for probe, summary in run_catalogue(server.url)}
    with running_ollama(1, max_queue=1, paths=paths) as server:
        real["queue_full"] = queue_scenario(server.url)
    against_sim = {name: unexplained(version, name, real[name], simulated(version)[name]) for name in NAMES}
    stale = {name: compare(read_fixture(name, fixtures_dir(version)), real[name]) for name in NAMES}
    assert {k: v for k, v in against_sim.items() if v} == {}
    assert {k: v for k, v in stale.items() if v} == {}, \
        f"the fixtures are stale: run `make ollama-fixtures OLLAMA_VERSION={version}`"


@pytest.mark.ollama
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_simulator_answers_like_the_running_ollama():
    """Live: the real Ollama 0.24.0 from `make ollama`."""
    live_check("0.24.0")


@pytest.mark.ollama_next
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_simulator_answers_like_the_running_ollama_next():
    """Live: the real Ollama 0.33.0 from `make ollama-next`."""
    live_check("0.33.0")
