"""The fit of `chunkwise measure` per batch tier (chunkwise.measure.tiers), Ollama's batch rule by era
(chunkwise.ollama.compute.runner_batch), and the runner's RSS on this machine (chunkwise.measure.rss).

Memory here is made up from a known line and known steps, so each assertion says what the fit must recover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from chunkwise.measure import rss
from chunkwise.measure.tiers import fit_tiers
from chunkwise.ollama.compute import runner_batch

SLOPE, WEIGHTS = 0.125, 5000.0


def memory(x: int, step: float = 0.0) -> float:
    return WEIGHTS + SLOPE * x + step


def test_the_slope_comes_from_one_tier_and_the_others_are_offsets():
    # 512 up to 4096 tokens, 1024 above (Ollama v0.30+, one slot): the runner's step is 124 MiB, not 768
    points = [(1024, memory(1024), 512), (2048, memory(2048), 512), (4096, memory(4096), 512),
              (8192, memory(8192, 124.0), 1024)]
    tiers = fit_tiers(points)
    assert tiers.main_batch == 512 and tiers.main.slope_mib_per_token == pytest.approx(SLOPE)
    assert tiers.main.intercept_mib == pytest.approx(WEIGHTS)
    (other,) = [t for t in tiers.tiers if t.batch == 1024]
    assert other.offset_mib == pytest.approx(124.0) and other.fit is None and other.contexts == (8192,)
    assert tiers.step_mib(1024, 20000) == pytest.approx(124.0) and tiers.step_mib(512, 3000) == 0.0
    assert tiers.step_mib(2048, 40000) is None  # not measured: the caller estimates it


def test_a_tier_with_two_contexts_gets_its_own_line_and_a_tie_goes_to_the_larger_batch():
    points = [(1024, memory(1024), 512), (2048, memory(2048), 512),
              (8192, memory(8192, 100.0) + 0.001 * 8192, 1024), (16384, memory(16384, 100.0) + 0.001 * 16384, 1024)]
    tiers = fit_tiers(points)
    assert tiers.main_batch == 1024  # two contexts each: the tier of the large contexts
    assert tiers.main.slope_mib_per_token == pytest.approx(SLOPE + 0.001)
    lower = tiers.tier(512)
    assert lower.fit.slope_mib_per_token == pytest.approx(SLOPE)
    assert tiers.step_mib(512, 1024) == pytest.approx(-100.0 - 0.001 * 1024)  # below the main line


def test_no_tier_with_two_contexts_means_no_slope():
    tiers = fit_tiers([(4096, memory(4096), 512), (8192, memory(8192, 124.0), 1024)])
    assert tiers.main is None and [t.contexts for t in tiers.tiers] == [(4096,), (8192,)]


@pytest.mark.parametrize(("version", "num_ctx", "parallel", "batch"), [
    ("0.24.0", 8192, 4, 512), ("0.24.0", 256, 1, 256),  # Go runners: min(512, num_ctx), llm/server.go:173
    ("0.33.0", 4096, 1, 512), ("0.33.0", 8192, 1, 1024), ("0.33.0", 8192, 4, 1024), ("0.33.0", 40000, 1, 2048),
    ("0.0.0", 40000, 1, 2048), ("0.33.0", 128, 1, 128),  # llama.cpp: the ubatch is at most the context
])
def test_the_runners_batch_by_era(version, num_ctx, parallel, batch):
    assert runner_batch(version, num_ctx, parallel) == batch


def test_ollama_lowers_the_batch_where_memory_is_tight():
    # 40,000 tokens want 2048, but a model of 15 GiB on 16 GiB leaves no headroom: Ollama keeps 512
    assert runner_batch("0.33.0", 40000, 1, None, 15 * 1024.0, 16 * 1024.0) == 512
    assert runner_batch("0.33.0", 40000, 1, None, 6 * 1024.0, 80 * 1024.0) == 2048


SERVER = textwrap.dedent("""
    import socket, subprocess, sys, time
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 << 20); time.sleep(60)",
                              "runner", "--model", "/models/blobs/sha256-abc"])
    print(s.getsockname()[1], flush=True)
    time.sleep(60)
""")


@pytest.mark.slow
def test_the_runner_is_found_by_the_servers_port_and_its_model():
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        assert rss.server_pid(url) == server.pid
        deadline = time.monotonic() + 20
        found, why = rss.runner_memory(url, "/models/blobs/sha256-abc")
        children = [pid for _, pid, _ in rss.runners(server.pid)]
        while (found is None or found.rss_mib < 64) and time.monotonic() < deadline:
            time.sleep(0.2)
            found, why = rss.runner_memory(url, "/models/blobs/sha256-abc")
        assert found is not None and found.rss_mib >= 64 and found.peak_mib >= found.rss_mib, why
        missing, why = rss.runner_memory(url, "/models/blobs/sha256-other")
        assert missing is None and "has no runner process for /models/blobs/sha256-other" in why
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        server.kill()
        server.wait()
    gone, why = rss.runner_memory(url)
    assert gone is None and "no process of this user listens" in why
