"""No calls home: a whole `chunkwise run`, with the Prefect API server it starts itself, connects to
nothing but loopback and the configured LLM host (slow: a subprocess and Prefect's temporary API).

The child runs under tests/netguard/sitecustomize.py, an audit hook that records (and refuses) every
name lookup and connection outside loopback, in the client and in Prefect's server subprocess. The
environment is cleared of the suite's own `PREFECT_SERVER_ANALYTICS_ENABLED=false`, so the run gets
Prefect's defaults plus whatever chunkwise sets itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chunkwise.commands.prefect_env import no_calls_home
from tests.support.pipeline_helpers import write_requests

REPO = Path(__file__).resolve().parents[1]
GUARD = REPO / "tests" / "netguard"


def guarded_env(tmp_path: Path, log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "CHUNKWISE_")) and k != "DO_NOT_TRACK"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING",
               PYTHONPATH=os.pathsep.join([str(GUARD), str(REPO)]), CHUNKWISE_NETGUARD_LOG=str(log),
               CHUNKWISE_NETGUARD_ALLOW="", HOME=str(tmp_path / "home"),
               # the run's directory and input are in tmp_path, not under the working directory (the defaults)
               CHUNKWISE_RUNS_ROOT=str(tmp_path), CHUNKWISE_INPUTS_ROOT=str(tmp_path))
    return env


@pytest.mark.slow
def test_a_whole_run_connects_only_to_loopback_and_the_llm_host(sim, tmp_path):
    source = write_requests(tmp_path / "in.parquet", 12, prompt_words=10)
    log = tmp_path / "netguard.jsonl"
    args = [sys.executable, "-m", "chunkwise", "run", "--input", str(source), "--host", sim.url,
            "--output-dir", str(tmp_path / "runs"), "--run-name", "n", "--mode", "independent",
            "--parallel", "2", "--num-ctx", "4096", "--num-predict", "512"]
    proc = subprocess.run(args, cwd=REPO, env=guarded_env(tmp_path, log), capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    refused = [e for e in events if not e["allowed"]]
    assert refused == [], f"outbound attempts outside loopback: {refused}"
    port = sim.url.rsplit(":", 1)[1]
    # the guard saw the traffic it is there to see: the LLM host, and the Prefect server in its own process
    assert any(e["event"] == "socket.connect" and e["target"].endswith(f":{port}") for e in events)
    starts = [e for e in events if e["event"] == "start"]
    assert len({e["pid"] for e in starts}) >= 2
    # Prefect's server heartbeat may lose a race with its own database set-up on a fresh home and skip
    # its first call, so the server's setting is checked too: the API server process ran with analytics off.
    servers = [e for e in starts if "uvicorn" in e["target"]]
    assert servers and all(str(e["analytics"]).lower() == "false" for e in servers), servers
    assert "sens-o-matic" not in proc.stdout + proc.stderr


def test_analytics_default_off_and_an_explicit_choice_wins():
    env: dict[str, str] = {}
    no_calls_home(env)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    no_calls_home(env)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true" and "DO_NOT_TRACK" not in env
