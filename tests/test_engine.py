"""The real engine: llama-server with Gemma 3 270M, started by the session fixture and by
`chunkwise engine`. Asserts structure, counts and memory, never the generated text (it is not
reproducible on a real engine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from chunkwise.harness.llama_server.paths import MODEL_ALIAS
from chunkwise.harness.llama_server.server import free_port
from tests.support.engine_fixture import ENGINE_CTX, ENGINE_PARALLEL
from tests.support.procs import children_of, survivors_of_a_kill, watched

pytestmark = [pytest.mark.slow, pytest.mark.engine]


def test_serves_the_model_with_its_slots(engine):
    with httpx.Client(base_url=engine.url, trust_env=False, timeout=60) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [MODEL_ALIAS]
        slots = http.get("/slots").json()
        assert len(slots) == ENGINE_PARALLEL
        assert {s["n_ctx"] for s in slots} == {ENGINE_CTX // ENGINE_PARALLEL}
        body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "Name three colours."}],
                "max_tokens": 8, "temperature": 0}
        answer = http.post("/v1/chat/completions", json=body).json()
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 5 and 1 <= usage["completion_tokens"] <= 8
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    # weights (241 MiB file, mmapped and touched) plus the KV cache reserved at load
    assert 240 < engine.rss_mib() < 2048


def test_engine_command_says_ready_and_stops_on_sigterm():
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "chunkwise", "engine", "--port", str(port), "--parallel", "2",
                             "--num-ctx", "1024"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("chunkwise engine: ready in "), line
        assert f"http://127.0.0.1:{port}/v1" in line and "2 slots x 1024 tokens" in line
        assert httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the server went with it
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=1)
            except httpx.TransportError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("llama-server still answers after chunkwise engine stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()



def test_a_killed_parent_leaves_no_server_behind(tmp_path):
    code = ("import sys, time\n"
            "from chunkwise.harness.llama_server.server import running_engine\n"
            f"with running_engine(1, 1024, log_path={str(tmp_path / 'server.log')!r}) as e:\n"
            "    print(e.pid, e.url, flush=True)\n"
            "    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = 0
    try:
        first, url = parent.stdout.readline().split()
        pid = int(first)
        assert httpx.get(url + "/health", trust_env=False).status_code == 200
        parent.kill()  # SIGKILL: no finally, no stop(); only the server's keeper (chunkwise.lifeline) can end it
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.2)
        assert not _running(pid), "llama-server outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid and _running(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_engine_command_leaves_no_server_behind():
    """`chunkwise engine` runs llama-server in the foreground (same session, no log file); a SIGKILL of
    the command (no KeyboardInterrupt, no stop()) must end the server too."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chunkwise", "engine", "--port", str(port), "--parallel", "1",
                             "--num-ctx", "1024"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    with watched(proc) as started:
        line = proc.stdout.readline()
        assert line.startswith("chunkwise engine: ready in "), line
        started.update(children_of(proc.pid))
        assert any("llama-server" in cmd for cmd in started.values()), started
        left = survivors_of_a_kill(proc, started, timeout_s=15)
        assert not left, f"outlived the killed chunkwise engine: {left}"


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a zombie has exited, only its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except FileNotFoundError:
        return False
