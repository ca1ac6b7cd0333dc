"""The tests run with their own settings, whatever the developer's shell exports (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chunkwise.settings import DEFAULT_OLLAMA_HOST, Settings

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = {
    "CHUNKWISE_OLLAMA_HOST": "http://10.9.9.9:1",
    "OLLAMA_HOST": "10.9.9.9:2",
    "CHUNKWISE_RETRY_BASE_DELAY_S": "60",
    "PREFECT_API_URL": "http://10.9.9.9:4200/api",
    "PREFECT_HOME": "/nonexistent/prefect-home",
}


def test_settings_are_the_tests_own() -> None:
    settings = Settings()
    assert settings.ollama_host == DEFAULT_OLLAMA_HOST
    assert settings.retry_base_delay_s == 0.01
    assert "PREFECT_API_URL" not in os.environ
    assert os.environ["PREFECT_HOME"] != HOSTILE["PREFECT_HOME"]


def test_a_hostile_shell_does_not_reach_the_tests() -> None:
    """The test above, in a pytest whose shell points chunkwise and Prefect at hosts that do not exist."""
    env = {**os.environ, **HOSTILE, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=",
         f"{Path(__file__).name}::test_settings_are_the_tests_own"],
        cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
