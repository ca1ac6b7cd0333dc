"""The simulator's fast-engine preset (issue 22): 256 slots whose aggregate decode rate saturates at
~5,800 tokens/s (MLPerf v5.1, vLLM FP8 on one H100), prefill 30,000 tokens/s (Modal), paged KV; every
number's source is in chunkwise/harness/sim/presets.py."""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import pytest

from chunkwise.harness.sim.era import era_of
from chunkwise.harness.sim.memory import MIB, loaded_size
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.harness.sim.timing import decode_slowdown, step_slowdown


def test_the_preset_fills_what_is_not_given_and_flags_win():
    fast = SimOptions(preset="fast-engine")
    assert (fast.parallel, fast.decode_batch_tps, fast.prefill_tps, fast.prefill_share, fast.kv_layout) == \
        (256, 5800.0, 30000.0, 0.0, "paged")
    mine = SimOptions(preset="fast-engine", parallel=64, answer_tokens="100:140")
    assert mine.parallel == 64 and mine.answer_tokens == (100, 140) and mine.decode_batch_tps == 5800.0
    assert SimOptions().decode_batch_tps == 0.0  # no preset: the Ollama-like power law as before


def test_aggregate_decode_saturates_at_the_full_batch_rate():
    rates = [n * 300.0 / step_slowdown(n, 256, 300.0, 5800.0) for n in (1, 16, 64, 128, 256)]
    assert rates[0] == 300.0 and all(b > a for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(5800.0)
    # flattening: doubling 128 -> 256 slots gains far less than doubling 16 -> 32
    assert rates[-1] / rates[-2] < 1.3
    # without decode_batch_tps the power law of batch_gain is used
    assert decode_slowdown(4, 4, 0.5, 10.0, 0.0) == pytest.approx(2.0)


def test_paged_kv_does_not_spill_with_many_slots():
    profile, era = PROFILES["llama3.1:8b"], era_of("0.24.0")
    reserved = loaded_size(profile, 8192, 256, "f16", 81920, era)
    paged = loaded_size(profile, 8192, 256, "f16", 81920, era, kv_layout="paged")
    assert reserved > 81920 * MIB  # 256 x 8,192 cells reserved at load would spill an 80 GB GPU
    assert paged == int(81920 * MIB * 0.9)


def chat(url: str, content: str) -> dict:
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": content}], "stream": False}
    return httpx.post(f"{url}/api/chat", json=body, timeout=60, trust_env=False).json()


def test_busy_slots_decode_on_the_step_time_curve(sim_factory):
    sim = sim_factory(parallel=4, decode_tps=10, decode_batch_tps=20, answer_tokens=(20, 20),
                      attention_scale_tokens=0)
    results: list[dict] = []
    threads = [threading.Thread(target=lambda i=i: results.append(chat(sim.url, f"q{i}"))) for i in range(4)]
    for i, t in enumerate(threads):
        t.start()
        deadline = time.monotonic() + 10
        while i < 3 and sim.stats(fingerprints=False)["received_total"] < i + 1:
            assert time.monotonic() < deadline
            time.sleep(0.002)
    for t in threads:
        t.join()
    base = 2_000_000_000  # 20 tokens at 10 tokens/s alone
    assert sorted(r["eval_duration"] for r in results) == \
        [round(base * step_slowdown(n, 4, 10, 20)) for n in (1, 2, 3, 4)]
