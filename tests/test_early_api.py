"""Prefect's temporary API as `chunkwise run` starts it (`chunkwise.commands.early_api`), in a child
process with no PREFECT_API_URL (slow: each child starts a Prefect API server).

Started, it answers, Prefect's settings point at it, and the client never imported Prefect's server
module (the cost the early start exists to avoid); the server is gone once the client exits.
Cancelled (a preflight that failed), it leaves no server process behind. A `chunkwise run` killed
with SIGKILL (no cleanup, no atexit) takes its server with it (`chunkwise.lifeline`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.procs import children_of, gone, survivors_of_a_kill, watched

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

STARTED = """
import json, os, sys, httpx
from chunkwise.commands.early_api import EarlyApi
api = EarlyApi().start()
api.wait()
from prefect.settings import PREFECT_API_URL
url = os.environ.get("PREFECT_API_URL")
print(json.dumps({"url": url, "setting": PREFECT_API_URL.value(), "pid": api._process.pid,
                  "health": httpx.get(f"{url}/health", trust_env=False).status_code,
                  "server_module": "prefect.server.api.server" in sys.modules}))
"""

CANCELLED = """
import json, time
from chunkwise.commands.early_api import EarlyApi
api = EarlyApi().start()
deadline = time.monotonic() + 60
while api._process is None and time.monotonic() < deadline:
    time.sleep(0.01)
pid = api._process.pid
api.cancel()
print(json.dumps({"pid": pid}))
"""


def child(code: str, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_started_it_answers_prefect_points_at_it_and_it_stops_with_the_client(tmp_path):
    seen = child(STARTED, tmp_path)
    assert seen["health"] == 200
    assert seen["url"].startswith("http://127.0.0.1:") and seen["setting"] == seen["url"]
    assert seen["server_module"] is False
    assert gone(seen["pid"])


def test_cancelled_it_leaves_no_server_behind(tmp_path):
    seen = child(CANCELLED, tmp_path)
    assert gone(seen["pid"])


def test_a_sigkilled_run_takes_its_api_server_with_it(sim_factory, tmp_path):
    """The server is up and the run is going when a SIGKILL ends `chunkwise run`: every process the run
    had started (the server, and its keeper) exits within seconds instead of running forever."""
    from tests.support.pipeline_helpers import write_requests

    source = write_requests(tmp_path / "in.parquet", 40, prompt_words=20)
    sim = sim_factory(answer_tokens=(30, 60), parallel=1)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PYTHONPATH=str(REPO))
    run = subprocess.Popen([sys.executable, "-m", "chunkwise", "run", "--input", str(source), "--host", sim.url,
                            "--output-dir", str(tmp_path / "runs"), "--run-name", "killed", "--parallel", "1",
                            "--num-ctx", "1024", "--num-predict", "64"],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with watched(run) as started:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:
            started.update(children_of(run.pid))
            servers = [cmd for cmd in started.values() if "prefect.server.api.server:create_app" in cmd]
            if servers:
                port = servers[0].split("--port ", 1)[1].split()[0]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/health", trust_env=False, timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        assert run.poll() is None, "the run ended before its API server answered"
        assert any("create_app" in cmd for cmd in started.values()), "no API server started within 60 s"
        left = survivors_of_a_kill(run, started)
        assert not left, f"outlived the killed run: {left}"
