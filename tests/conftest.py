"""Shared fixtures, the test tiers, and a hermetic environment.

Tiers (registered in pyproject.toml, applied here by `pytest_collection_modifyitems`):

    pure   no Prefect, no subprocess; the default for a test that uses neither fixture nor marker below
    flow   runs under the session-wide `prefect_harness` (marked automatically when a test uses it)
    slow   real components: a Prefect server, a browser, subprocess runs, the soak (marked by hand)
    engine the real llama-server from `make engine` (marked by hand, with slow)
    ollama the real Ollama from `make ollama` (marked by hand, with slow)
    ollama_next  the real Ollama v0.33.0 from `make ollama-next` (marked by hand, with slow): run by
           `make test-ollama-next`, left out of `make test` (its build costs ~13 more minutes)

`pytest -m pure` is the quick loop, `pytest -m "not slow"` adds the flows, `make test` runs all but
ollama_next.

Prefect: flow tests share ONE `prefect_test_harness` for the whole session (starting it costs
~15 s; a harness per test would cost that every time), with result storage and Prefect's home kept
in a temporary directory so nothing leaks into ~/.prefect.

Hermetic: the tests' settings win over a developer's own. Before any test module is imported, every
`CHUNKWISE_*`, `PREFECT_*` and `OLLAMA_*` variable of the calling shell is dropped (except the test
knobs in `KEPT`), then the values below are set, and Prefect's home is a temporary directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.support.sim_fixtures", "tests.support.engine_fixture", "tests.support.ollama_fixture",
                  "tests.support.cluster"]

#: Variables of the calling shell that are test knobs, not settings: kept.
KEPT = frozenset({"CHUNKWISE_UI_SCREENSHOTS", "CHUNKWISE_CHROMIUM"})
SCRUBBED_PREFIXES = ("CHUNKWISE_", "PREFECT_", "OLLAMA_")

#: What the tests run with, whatever the shell says.
TEST_ENV = {
    # Quiet, offline, and patient with a slow first start on a 2-core machine.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # Request-level backoff in tests: milliseconds, not seconds.
    "CHUNKWISE_RETRY_BASE_DELAY_S": "0.01",
    "CHUNKWISE_RETRY_MAX_DELAY_S": "0.05",
    "CHUNKWISE_CHUNK_RETRY_DELAY_S": "0.2",
    # Tests put their run directories in temporary directories (tmp_path, mkdtemp) and read inputs from
    # wherever they wrote them: these are the roots that allows. tests/test_confine.py checks the defaults
    # (output dir, working directory) and every refusal with roots of its own.
    "CHUNKWISE_RUNS_ROOT": tempfile.gettempdir(),
    "CHUNKWISE_INPUTS_ROOT": "/",
}


def scrub_environment(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Drop the shell's chunkwise, Prefect and Ollama variables and set the tests' own; returns the
    names dropped."""
    dropped = [name for name in environ if name.startswith(SCRUBBED_PREFIXES) and name not in KEPT]
    for name in dropped:
        del environ[name]
    environ.update(TEST_ENV)
    return dropped


scrub_environment(os.environ)
_prefect_home = tempfile.mkdtemp(prefix="chunkwise-tests-prefect-")
os.environ["PREFECT_HOME"] = _prefect_home
atexit.register(shutil.rmtree, _prefect_home, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier: `flow` when it uses the harness, `pure` when it is no other tier."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "prefect_harness" in fixtures:
            item.add_marker(pytest.mark.flow)
        if not any(item.get_closest_marker(tier) for tier in ("flow", "slow", "engine", "ollama", "ollama_next")):
            item.add_marker(pytest.mark.pure)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from prefect.settings import PREFECT_HOME, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: str(home), PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(home / "storage")}):
        with prefect_test_harness(server_startup_timeout=180):
            yield


@pytest.fixture
def clean_process() -> Iterator[None]:
    """For tests that run `chunkwise run` in this process: restore the SIGINT/SIGTERM handlers it
    installs (its stop flag and session live only as long as the run)."""
    from tests.support.run_checks import saved_signal_handlers

    with saved_signal_handlers():
        yield
