"""Prefect's temporary API as `chunkwise run` starts it (`chunkwise.commands.early_api`), in a child
process with no PREFECT_API_URL (slow: each child starts a Prefect API server).

Started, it answers, Prefect's settings point at it, and the client never imported Prefect's server
module (the cost the early start exists to avoid); the server is gone once the client exits.
Cancelled (a preflight that failed), it leaves no server process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether process `pid` is gone (or a zombie awaiting its reaper) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_started_it_answers_prefect_points_at_it_and_it_stops_with_the_client(tmp_path):
    seen = child(STARTED, tmp_path)
    assert seen["health"] == 200
    assert seen["url"].startswith("http://127.0.0.1:") and seen["setting"] == seen["url"]
    assert seen["server_module"] is False
    assert gone(seen["pid"])


def test_cancelled_it_leaves_no_server_behind(tmp_path):
    seen = child(CANCELLED, tmp_path)
    assert gone(seen["pid"])
