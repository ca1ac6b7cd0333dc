"""Shared fixtures.

Prefect: flow tests share ONE `prefect_test_harness` for the whole session (starting it costs
~15 s; a harness per test would cost that every time), with result storage and Prefect's home kept
in a temporary directory so nothing leaks into ~/.prefect. Pure-logic tests never start it.
"""

from __future__ import annotations

import os

import pytest

# Quiet, offline, and patient with a slow first start on a 2-core machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Request-level backoff in tests: milliseconds, not seconds.
os.environ.setdefault("CHUNKWISE_RETRY_BASE_DELAY_S", "0.01")
os.environ.setdefault("CHUNKWISE_RETRY_MAX_DELAY_S", "0.05")
os.environ.setdefault("CHUNKWISE_CHUNK_RETRY_DELAY_S", "0.2")


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    from prefect.settings import PREFECT_HOME, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: str(home), PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(home / "storage")}):
        with prefect_test_harness(server_startup_timeout=180):
            yield


@pytest.fixture
def clean_process():
    """For tests that run `chunkwise run` in this process: forget the stop flag and runtimes a run
    leaves behind, and restore the SIGINT/SIGTERM handlers it installs."""
    from tests.run_checks import reset_process_state, saved_signal_handlers

    reset_process_state()
    with saved_signal_handlers():
        yield
    reset_process_state()


from tests.sim_fixtures import sim, sim_factory  # noqa: E402,F401  (the simulator fixtures)
