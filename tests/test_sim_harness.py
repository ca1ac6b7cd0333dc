"""The harness (`running_simulator`, stop/start on the same port) and the `chunkwise sim` command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from chunkwise.cli import build_parser
from chunkwise.commands.sim import options_from_args
from chunkwise.harness.sim.era import CURRENT_VERSION
from chunkwise.harness.sim.harness import cli_args, free_port, running_simulator
from chunkwise.harness.sim.options import SimOptions

CHAT = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_stop_and_start_keep_the_port_and_the_stats(sim):
    url = sim.url
    assert httpx.post(f"{url}/api/chat", json=CHAT, trust_env=False).status_code == 200
    sim.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/version", trust_env=False)
    sim.start()
    assert sim.url == url
    assert httpx.get(f"{url}/api/ps", trust_env=False).json()["models"] == []  # a restart unloads the model
    assert httpx.post(f"{url}/api/chat", json=CHAT, trust_env=False).status_code == 200
    stats = sim.stats()
    assert stats["answered_total"] == 2 and stats["max_answered_per_fingerprint"] == 2 and stats["loads"] == 2


def test_stop_drops_requests_in_flight(sim_factory):
    sim = sim_factory(decode_tps=5, answer_tokens=(50, 50))
    results = []

    def call():
        try:
            results.append(httpx.post(f"{sim.url}/api/chat", json=CHAT, timeout=30, trust_env=False).status_code)
        except httpx.TransportError as exc:
            results.append(type(exc).__name__)

    import threading

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while sim.stats(fingerprints=False)["in_flight"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sim.stop()
    t.join(timeout=20)
    assert results and results[0] != 200
    sim.start()
    assert sim.stats(fingerprints=False)["answered_total"] == 0


def test_process_mode_same_port_and_config_survives_restart():
    with running_simulator(SimOptions(fail_rate=1.0), process=True) as handle:
        url = handle.url
        assert httpx.get(f"{url}/api/version", trust_env=False).json()["simulator"] == "chunkwise"
        assert httpx.post(f"{url}/api/chat", json=CHAT, trust_env=False).status_code == 500
        handle.configure(fail_rate=0.0, reset_rate=0.0)
        handle.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/api/version", trust_env=False)
        handle.start()
        assert handle.url == url
        assert httpx.post(f"{url}/api/chat", json=CHAT, trust_env=False).status_code == 200
        assert handle.stats()["received_total"] == 1  # a new process starts with empty stats


def test_every_option_has_a_flag_that_round_trips():
    options = SimOptions(host="127.0.0.1", port=1234, parallel=3, max_queue=7, num_ctx_default=8192, prefill_tps=2000.5,
                         decode_tps=90, load_ms=250, kv_cache_type="q4_0", truncation="half", fail_rate=0.1,
                         reset_rate=0.05, stall_rate=0.02, stall_s=4, incomplete_rate=0.03, seed=9,
                         answer_tokens=(4, 8), vram_mib=24576, ollama_version="0.30.11", attention_scale_tokens=0,
                         stream_chunk_tokens=2, keep_alive_default_s=-1)
    args = build_parser().parse_args(["sim", *cli_args(options)])
    assert options_from_args(args) == options
    assert options_from_args(build_parser().parse_args(["sim"])) == SimOptions()


def test_bad_flags_exit_2_with_one_line(tmp_path):
    for argv, needle in ((["--fail-rate", "0.7", "--reset-rate", "0.7"], "add up to"),
                         (["--answer-tokens", "9"], "--answer-tokens"), (["--parallel", "0"], "--parallel")):
        run = subprocess.run([sys.executable, "-m", "chunkwise", "sim", *argv],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and needle in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_cli_subprocess_serves_and_stops_on_sigint():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chunkwise", "sim", "--port", str(port), "--parallel", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first and "SIMULATOR" in second
        version = httpx.get(f"http://127.0.0.1:{port}/api/version", trust_env=False)
        assert version.json() == {"version": CURRENT_VERSION, "simulator": "chunkwise"}
        assert version.headers["X-Ollama-Simulator"] == "chunkwise"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "chunkwise", "sim", "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    for flag in ("--ollama-version", "--token-density", "--load-failure", "--stream-error-rate", "--compute-buffers"):
        assert flag in out.stdout
