"""Slots share one engine: sub-linear batched decoding, prefills delaying the others, /api/ps memory.

Sources: llama.cpp `examples/batched-bench/README.md` sample (aggregate decode 41.57 t/s at B=1,
74.44 at B=4, 242.23 at B=16: sub-linear); Ollama v0.33.0-rc2 `llm/llama_server.go:375-376`
(`-c num_ctx*np -np np`: one llama-server, one batch for every slot); compute buffers:
`server/sched.go:798-804,859-915` (automatic num_batch 512/1024/2048 by effective context and the
768 MiB / 2 GiB surcharge), `llm/llama_server.go:2638-2669` (/api/ps size from llama-server's
buffer logs, compute buffers included).
"""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import pytest

from chunkwise.harness.sim.memory import GIB, MIB, automatic_batch, compute_buffer_bytes, kv_bytes
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.harness.sim.timing import BATCH_GAIN, slot_slowdown


def chat(url: str, content: str, **extra) -> dict:
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": content}], "stream": False, **extra}
    return httpx.post(f"{url}/api/chat", json=body, timeout=60, trust_env=False).json()


def test_aggregate_decode_grows_sub_linearly():
    rates = [n / slot_slowdown(n) for n in (1, 2, 4, 8, 16)]
    assert rates[0] == 1.0 and all(b > a for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(16**BATCH_GAIN) and rates[-1] < 16
    # llama.cpp's sample: 242.23 / 41.57 = 5.8x at B=16; the model gives 16^0.55 = 4.6x
    assert 4 < rates[-1] < 6.5


def test_busy_slots_slow_each_others_decoding(sim_factory):
    sim = sim_factory(parallel=4, decode_tps=10, answer_tokens=(20, 20), attention_scale_tokens=0)
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
    base = 2_000_000_000  # 20 tokens at 10 tokens/s; the 4 requests arrive within that
    assert sorted(r["eval_duration"] for r in results) == [round(base * slot_slowdown(n)) for n in (1, 2, 3, 4)]


def test_a_prefill_delays_the_other_slots_decoding(sim_factory):
    sim = sim_factory(parallel=2, decode_tps=20, prefill_tps=5000, answer_tokens=(40, 40),
                      attention_scale_tokens=0, prefill_share=0.5)
    first: list[dict] = []
    t = threading.Thread(target=lambda: first.append(chat(sim.url, "short")))
    t.start()
    deadline = time.monotonic() + 10
    while sim.stats(fingerprints=False)["in_flight"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    # about 1,000 tokens: 0.2 s of prefill while the first one decodes (2 s)
    long = chat(sim.url, "word " * 1000, options={"num_predict": 1})
    t.join()
    assert long["prompt_eval_duration"] > 150_000_000
    assert first[0]["eval_duration"] == 2_000_000_000 + round(long["prompt_eval_duration"] * 0.5)


@pytest.mark.parametrize("effective_ctx,batch", [(4096, 512), (4097, 1024), (32768, 1024), (32769, 2048)])
def test_automatic_batch_steps_by_effective_context(effective_ctx, batch):
    assert automatic_batch(effective_ctx, 6 * GIB, 81920) == batch


def test_automatic_batch_steps_down_when_memory_is_tight():
    # sched.go:870-895: above 60 % of free memory the 2048 batch is not taken, above 75 % not 1024 either
    assert automatic_batch(65536, 50 * GIB, 81920) == 1024
    assert automatic_batch(65536, 63 * GIB, 81920) == 512
    assert compute_buffer_bytes(65536, 50 * GIB, 81920) == 768 * MIB


def test_ps_size_includes_the_compute_buffers(sim_factory):
    sim = sim_factory(compute_buffers=True)
    profile = PROFILES["llama3.1:8b"]
    for num_ctx, surcharge in ((4096, 0), (8192, 768 * MIB), (65536, 2 * GIB)):
        chat(sim.url, "hi", options={"num_ctx": num_ctx, "num_predict": 1})
        ps = httpx.get(f"{sim.url}/api/ps", trust_env=False).json()["models"][0]
        assert ps["size"] == profile.weights_bytes + kv_bytes(profile, num_ctx, 1, "f16") + surcharge
