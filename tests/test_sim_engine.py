"""Slots share one engine: sub-linear batched decoding, prefills delaying the others, /api/ps memory.

Sources: llama.cpp `examples/batched-bench/README.md` sample (aggregate decode 41.57 t/s at B=1,
74.44 at B=4, 242.23 at B=16: sub-linear); Ollama v0.33.0-rc2 `llm/llama_server.go:375-376`
(`-c num_ctx*np -np np`: one llama-server, one batch for every slot); memory: sim/memory.py, checked
against a real Ollama 0.24.0's /api/ps and research real-engine.md's llama-server logs (Ollama's own
768 MiB / 2 GiB surcharge estimate only picks the batch, `server/sched.go:798-804,859-915`).
"""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import pytest

from chunkwise.harness.sim.era import era_of
from chunkwise.harness.sim.memory import GIB, MIB, SURCHARGE, allocation, automatic_batch
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


#: A real Ollama 0.24.0 (CPU, 4 slots) serving gemma3-270m, 2026-12-06: (num_ctx, num_batch) -> /api/ps size
#: in bytes and its log's "compute graph" in MiB (sim/memory.py's table).
REAL_0_24_0 = {(256, 512): (453419520, 9.2), (512, 512): (484090368, 20.5), (1024, 512): (507159040, 25.2),
               (2048, 512): (523936256, 29.2), (4096, 512): (557490688, 37.2), (8192, 512): (624599552, 53.2),
               (2048, 128): (492937728, 7.2), (2048, 1024): (563520000, 59.5), (8192, 1024): (689349120, 107.5)}


@pytest.mark.parametrize("num_ctx,num_batch", sorted(REAL_0_24_0))
def test_memory_matches_a_real_ollama_0_24_0(num_ctx, num_batch):
    """Weights (with the tied embedding loaded twice), the windowed KV of Ollama's engine and the compute
    graph give the real /api/ps size to the byte, except 0.5 MiB of compute graph at 256 x 256."""
    size, compute_mib = REAL_0_24_0[(num_ctx, num_batch)]
    alloc = allocation(PROFILES["gemma3-270m:latest"], num_ctx, 4, "f16", 0, era_of("0.24.0"), num_batch)
    assert alloc.batch == min(num_batch, num_ctx)
    assert abs(alloc.compute / MIB - compute_mib) < 0.6
    assert abs(alloc.total - size) <= (0.6 * MIB if num_ctx == 256 else 0)


def test_llama_server_windows_gemma3_as_measured():
    """research real-engine.md: llama-server, gemma3-270m, -c 32768 -np 4 (n_ubatch 512): 3 global layers
    96 MiB, 15 sliding-window layers 60 MiB (1024 cells per slot), compute buffer 26.8 MiB."""
    alloc = allocation(PROFILES["gemma3-270m:latest"], 8192, 4, "f16", 0, era_of("0.33.0-rc2"), 512)
    assert alloc.kv == (96 + 60) * MIB
    assert alloc.weights == PROFILES["gemma3-270m:latest"].tensor_bytes  # llama.cpp loads the embedding once
    assert abs(alloc.compute / MIB - 26.8) / 26.8 < 0.05


def test_ps_size_is_the_runners_allocation_not_ollamas_estimate(sim_factory):
    """/api/ps reports weights + KV + the modelled compute buffers. Ollama's own surcharge estimate (0 /
    768 MiB / 2 GiB) only picks the batch; the bytes differ from it, so a client that subtracts the
    estimate cannot recover the KV exactly by construction."""
    sim = sim_factory(compute_buffers=True)
    profile = PROFILES["llama3.1:8b"]
    era = era_of(sim.options.ollama_version)
    for num_ctx, batch in ((4096, 512), (8192, 1024), (65536, 2048)):
        chat(sim.url, "hi", options={"num_ctx": num_ctx, "num_predict": 1})
        ps = httpx.get(f"{sim.url}/api/ps", trust_env=False).json()["models"][0]
        alloc = allocation(profile, num_ctx, 1, "f16", sim.options.vram_mib, era)
        assert alloc.batch == batch
        assert ps["size"] == alloc.total == profile.weights_bytes + alloc.kv + alloc.compute
        assert alloc.kv == 32 * 8 * 256 * 2 * num_ctx  # no sliding window: every layer, every token
        assert alloc.compute != SURCHARGE[batch]
        assert 0 < alloc.compute < 2 * GIB


def test_sliding_window_layers_hold_a_window_on_llama_server_and_all_tokens_before(sim_factory):
    """gpt-oss: 12 of 24 layers slide over 128 tokens. From v0.30 (llama-server) the KV grows by the 12
    global layers per token only; the Go runners' Ollama engine keeps 4096 cells per slot in the window
    layers (`NewSWAMemCache(window, 4096)`), so at 32768 tokens they cost an eighth of the full layout."""
    profile = PROFILES["gpt-oss:20b"]
    per_layer_token = 8 * 64 * 2 * 2
    new = era_of("0.33.0-rc2")
    grow = (allocation(profile, 65536, 1, "f16", 0, new, 512).kv - allocation(profile, 32768, 1, "f16", 0, new, 512).kv)
    assert grow == 12 * per_layer_token * 32768
    old = allocation(profile, 32768, 1, "f16", 0, era_of("0.24.0"))
    assert old.kv == 12 * per_layer_token * 32768 + 12 * per_layer_token * (4096 + 512)


def test_gemma2_keeps_every_layer_full_in_the_llama_cpp_runner_and_windows_half_of_them_on_llama_server():
    """v0.24.0 runs gemma2 on the vendored llama.cpp with swa_full (llama-context.cpp:2393): all 42 layers
    hold every token. llama-server (v0.30+) windows the 21 even layers to 4096 + n_ubatch cells per slot."""
    profile = PROFILES["gemma2:9b"]
    per_layer_token = 8 * 512 * 2
    old = allocation(profile, 8192, 1, "f16", 0, era_of("0.24.0"))
    assert old.kv == 42 * per_layer_token * 8192
    new = allocation(profile, 8192, 1, "f16", 0, era_of("0.33.0-rc2"), 512)
    assert new.kv == 21 * per_layer_token * 8192 + 21 * per_layer_token * (4096 + 512)
