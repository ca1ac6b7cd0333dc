"""Slots, reloads, the wait queue, keep_alive and the prefix cache, seen through Ollama's API."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from chunkwise.harness.sim.era import era_of
from chunkwise.harness.sim.memory import allocation
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.harness.sim.prompt import chat_prompt
from chunkwise.harness.sim.scheduler import BUSY, common_prefix, shared_segments
from chunkwise.harness.sim.templates import render_chat
from chunkwise.harness.sim.timing import decode_ns, prefill_ns

SYSTEM = {"role": "system", "content": "You label support tickets. " * 40}


def chat(url: str, messages: list, **extra) -> httpx.Response:
    body = {"model": "llama3.1:8b", "messages": messages, "stream": False, **extra}
    return httpx.post(f"{url}/api/chat", json=body, timeout=60, trust_env=False)


def user(text: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": text}]


def in_threads(calls, sim) -> list:
    """Run callables in threads, each started once the previous one is visible in the simulator
    (in flight or queued), so arrival order is certain; results in call order."""
    results = [None] * len(calls)

    def run(i, fn):
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for i, t in enumerate(threads):
        t.start()
        if i < len(threads) - 1:
            deadline = time.monotonic() + 10
            while True:
                stats = sim.stats(fingerprints=False)
                if stats["in_flight"] + stats["queued"] >= i + 1:
                    break
                assert time.monotonic() < deadline, "request never reached the simulator"
                time.sleep(0.005)
    for t in threads:
        t.join()
    return results


def test_common_prefix_matches_a_plain_loop():
    rng = random.Random(3)
    for _ in range(300):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 9000))]
        b = list(a[: rng.randint(0, len(a))]) + [rng.choice("abcd") for _ in range(rng.randint(0, 50))]
        expected = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert common_prefix(a, b) == expected


def test_prefix_shortcut_through_cached_messages_gives_the_plain_prefix():
    """Slots skip the leading messages two prompts share as the same cached token tuple; the cached
    length must be the element-wise common prefix whatever the prompts (shared system prompt,
    shared history, equal text from evicted tuples, truncated prompts without segments)."""
    rng = random.Random(8)
    words = ["alpha", "beta", " gamma", ",", "\n\n", "delta!"]
    history = [{"role": rng.choice(["user", "assistant"]), "content": "".join(rng.choices(words, k=rng.randint(0, 30)))}
               for _ in range(12)]
    checked = 0
    for _ in range(200):
        a = [SYSTEM, *history[: rng.randint(0, 12)]]
        b = [SYSTEM, *history[: rng.randint(0, 12)], {"role": "user", "content": rng.choice(words)}]
        if rng.random() < 0.3:
            b = [{"role": "system", "content": str(SYSTEM["content"])[:-1] + " "}, *b[1:]]
        num_ctx = rng.choice([100_000, 400])
        pa, pb = (chat_prompt(m, num_ctx, 4, True, "half", True) for m in (a, b))
        if rng.random() < 0.5:
            pa.tokens = [*pa.tokens, "generated", " answer"]  # a slot holds prompt + answer
        start = shared_segments(pa.segments, pb.segments)
        assert common_prefix(pa.tokens, pb.tokens, start) == common_prefix(pa.tokens, pb.tokens)
        checked += start > 0
    assert checked > 50  # the shortcut was taken


def test_num_ctx_change_reloads_and_load_duration_shows_it(sim_factory):
    sim = sim_factory(load_ms=80)
    first = chat(sim.url, user("a"), options={"num_ctx": 4096}).json()
    assert first["load_duration"] >= 80_000_000
    chat(sim.url, user("b"), options={"num_ctx": 4096})
    assert sim.stats()["loads"] == 1
    third = chat(sim.url, user("c"), options={"num_ctx": 8192}).json()
    assert third["load_duration"] >= 80_000_000
    chat(sim.url, user("d"), options={"num_ctx": 8192}, model="qwen2.5:7b")
    stats = sim.stats()
    assert stats["loads"] == 3 and stats["unloads"] == 2
    assert httpx.get(f"{sim.url}/api/ps", trust_env=False).json()["models"][0]["model"] == "qwen2.5:7b"


def test_reload_waits_for_in_flight_requests(sim_factory):
    sim = sim_factory(parallel=2, decode_tps=40, answer_tokens=(12, 12), load_ms=10)
    chat(sim.url, user("warm"), options={"num_ctx": 4096})
    done_order = []

    def call(text, num_ctx, num_predict):
        def fn():
            r = chat(sim.url, user(text), options={"num_ctx": num_ctx, "num_predict": num_predict}).json()
            done_order.append(text)
            return r
        return fn

    _long, reload = in_threads([call("long", 4096, 12), call("reload", 8192, 1)], sim)
    assert done_order == ["long", "reload"]  # the 1-token request had to wait for the 12-token one
    assert reload["load_duration"] >= 10_000_000
    assert sim.stats()["loads"] == 2


def _all_at_once(sim, calls) -> tuple[list, int]:
    """Run callables in threads at once; results in call order and the most requests seen queued."""
    results = [None] * len(calls)
    threads = [threading.Thread(target=lambda i=i, fn=fn: results.__setitem__(i, fn())) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    most = 0
    while any(t.is_alive() for t in threads):
        most = max(most, sim.stats(fingerprints=False)["queued"])
        time.sleep(0.01)
    return results, most


def test_no_503_for_the_loaded_model_whatever_the_queue(sim_factory):
    # v0.33.0-rc2:server/sched.go:197-203: a request for a loaded runner that needs no reload takes the
    # useLoadedRunner fast path and waits on the runner without limit; OLLAMA_MAX_QUEUE is not consulted.
    sim = sim_factory(parallel=1, max_queue=1, decode_tps=10, answer_tokens=(6, 6))
    httpx.post(f"{sim.url}/api/chat", json={"model": "llama3.1:8b", "messages": []}, trust_env=False)  # load
    results, most = _all_at_once(sim, [lambda i=i: chat(sim.url, user(f"q{i}")) for i in range(4)])
    assert [r.status_code for r in results] == [200] * 4
    assert most >= 2  # more waited than max_queue allows
    assert "503" not in sim.stats()["requests"]["/api/chat"]


def test_503_only_when_a_reload_is_needed_and_the_load_queue_is_full(sim_factory):
    # v0.33.0-rc2:server/sched.go:204-208: a request that needs a (re)load goes to pendingReqCh (capacity
    # OLLAMA_MAX_QUEUE); when it is full the request gets ErrMaxQueue (sched.go:88), HTTP 503
    # (routes.go:3112-3113). The scheduler has taken the first one off the channel while it waits for the
    # runner to drain (v0.24.0:server/sched.go:163-260), so max_queue + 1 wait and the next is refused.
    sim = sim_factory(parallel=1, max_queue=2, decode_tps=5, answer_tokens=(10, 10))
    httpx.post(f"{sim.url}/api/chat", json={"model": "llama3.1:8b", "messages": []}, trust_env=False)  # load 4096

    def reload(i):
        return lambda: chat(sim.url, user(f"r{i}"), options={"num_ctx": 8192, "num_predict": 1})

    results = in_threads([lambda: chat(sim.url, user("long"))] + [reload(i) for i in range(4)], sim)
    assert [r.status_code for r in results] == [200, 200, 200, 200, 503]
    assert results[4].json() == {"error": BUSY} and "again.  maximum" in BUSY
    assert sim.stats()["requests"]["/api/chat"]["503"] == 1


def test_before_0_11_5_the_queue_bounded_every_waiter(sim_factory):
    sim = sim_factory(parallel=1, max_queue=2, load_ms=1500, ollama_version="0.11.4")
    results = in_threads([lambda i=i: chat(sim.url, user(f"q{i}")) for i in range(3)], sim)  # all wait for the load
    assert [r.status_code for r in results] == [200, 200, 503]


def test_prefix_cache_shortens_prompt_eval_duration_not_count(sim_factory):
    rate = 200_000.0
    sim = sim_factory(prefill_tps=rate, decode_tps=0)
    scale = 131072
    first_msgs = user("Ticket 1: printer on fire.")
    first = chat(sim.url, first_msgs).json()
    n1 = len(render_chat(first_msgs))
    assert first["prompt_eval_count"] == n1 and first["prompt_eval_duration"] == prefill_ns(0, n1, rate, scale)

    second_msgs = user("Ticket 2: screen is blank.")
    second = chat(sim.url, second_msgs).json()
    tokens2 = render_chat(second_msgs)
    cached = common_prefix(render_chat(first_msgs), tokens2)
    assert cached > len(render_chat([SYSTEM]))  # the system prompt and the user header were reused
    assert second["prompt_eval_count"] == len(tokens2)
    assert second["prompt_eval_duration"] == prefill_ns(cached, len(tokens2) - cached, rate, scale)
    assert second["prompt_eval_duration"] < first["prompt_eval_duration"] / 5

    again = chat(sim.url, second_msgs).json()  # identical prompt: one token is re-evaluated
    assert again["prompt_eval_duration"] == prefill_ns(len(tokens2) - 1, 1, rate, scale)

    # a conversation: the cached answer tokens count too
    convo = [*second_msgs, {"role": "assistant", "content": again["message"]["content"]},
             {"role": "user", "content": "And the keyboard?"}]
    turn = chat(sim.url, convo).json()
    tokens3 = render_chat(convo)
    reused = len(tokens2) + again["eval_count"]
    assert tokens3[:reused] == tokens2 + render_chat([convo[2]])[5:-5]  # BOS + header 4, eot + generation prompt 5
    assert turn["prompt_eval_duration"] == prefill_ns(reused, len(tokens3) - reused, rate, scale)


def test_parallel_slots_each_keep_their_own_cache(sim_factory):
    sim = sim_factory(parallel=2, prefill_tps=100_000, decode_tps=10, answer_tokens=(10, 10))
    other_system = {"role": "system", "content": "Translate to French. " * 40}
    a = [SYSTEM, {"role": "user", "content": "one"}]
    b = [other_system, {"role": "user", "content": "two"}]
    in_threads([lambda: chat(sim.url, a), lambda: chat(sim.url, b)], sim)  # both slots busy at once
    again_a = chat(sim.url, a).json()
    again_b = chat(sim.url, b).json()
    assert again_a["prompt_eval_duration"] == prefill_ns(len(render_chat(a)) - 1, 1, 100_000, 131072)
    assert again_b["prompt_eval_duration"] == prefill_ns(len(render_chat(b)) - 1, 1, 100_000, 131072)


def test_decode_time_follows_the_timing_model(sim_factory):
    sim = sim_factory(decode_tps=5000, answer_tokens=(40, 40))
    body = chat(sim.url, user("x")).json()
    assert body["eval_count"] == 40
    assert body["eval_duration"] == decode_ns(body["prompt_eval_count"], 40, 5000, 131072)
    assert body["total_duration"] >= body["eval_duration"] + body["load_duration"]


def ps(url: str) -> list[dict]:
    return httpx.get(f"{url}/api/ps", trust_env=False).json()["models"]


def seconds_left(entry: dict) -> float:
    expires = datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00"))
    return (expires - datetime.now(UTC)).total_seconds()


@pytest.mark.parametrize("keep_alive,low,high", [(None, 280, 300), ("10m", 590, 600), (3600, 3590, 3600),
                                                 ("1h30m", 5390, 5400), (-1, 9e9, 1e10), ("-1m", 9e9, 1e10)])
def test_keep_alive_sets_ps_expires_at(sim, keep_alive, low, high):
    extra = {} if keep_alive is None else {"keep_alive": keep_alive}
    chat(sim.url, user("k"), **extra)
    assert low <= seconds_left(ps(sim.url)[0]) <= high


def test_keep_alive_zero_and_expiry_unload_the_model(sim):
    chat(sim.url, user("k"), keep_alive=0)
    assert ps(sim.url) == [] and sim.stats()["unloads"] == 1
    chat(sim.url, user("k"), keep_alive=1.5)  # long enough for a loaded machine to ask /api/ps in time
    assert len(ps(sim.url)) == 1
    time.sleep(1.6)
    assert ps(sim.url) == []
    chat(sim.url, user("k"))
    assert sim.stats()["loads"] == 3


def test_ps_size_is_weights_plus_reserved_kv(sim_factory):
    sim = sim_factory(parallel=4, kv_cache_type="q8_0", vram_mib=4096)
    chat(sim.url, user("k"), options={"num_ctx": 8192}, model="qwen2.5:7b")
    entry = ps(sim.url)[0]
    profile = PROFILES["qwen2.5:7b"]
    alloc = allocation(profile, 8192, 4, "q8_0", 4096, era_of(sim.options.ollama_version))
    # 28 layers x 4 KV heads x (128 + 128) elements of 34/32 bytes (q8_0), for 8192 tokens in each of 4 slots
    assert alloc.kv == 28 * 4 * 256 * 34 // 32 * 8192 * 4
    assert entry["size"] == profile.weights_bytes + alloc.kv + alloc.compute
    assert entry["size_vram"] == 4096 * 1024 * 1024 < entry["size"]  # spilled
    assert entry["digest"] == profile.digest and entry["details"]["family"] == "qwen2"


def test_reset_during_a_load_restarts_it(sim_factory):
    sim = sim_factory(load_ms=300)
    result = []
    t = threading.Thread(target=lambda: result.append(chat(sim.url, user("waiting")).status_code))
    t.start()
    time.sleep(0.1)
    sim.reset()  # cancels the load in progress; the waiting request triggers a new one
    t.join(timeout=20)
    assert result == [200] and sim.stats()["loads"] == 1


def test_slot_utilisation_counts_leased_time_over_the_window():
    import time as _time

    from chunkwise.harness.sim.stats import SimStats

    stats = SimStats()
    t0 = _time.perf_counter_ns()
    stats.slot_acquired(t0)
    stats.slot_acquired(t0)
    stats.slot_released(t0, t0 + 1_000_000_000)  # slot A busy 1 s
    stats.slot_released(t0, t0 + 2_000_000_000)  # slot B busy 2 s; window 2 s
    slots = stats.slots(parallel=2)
    assert {k: slots[k] for k in ("busy_s", "window_s", "utilisation")} == {"busy_s": 3.0, "window_s": 2.0,
                                                                           "utilisation": 0.75}
    assert SimStats().slots(parallel=2)["utilisation"] is None


def two_slots_busy_then_draining():
    """Two slots: A busy 0-10 s (one long answer), B 0-2 s, then B's last lease busy 2-3 s (times in ns)."""
    from chunkwise.harness.sim.stats import SimStats

    stats, s = SimStats(), 1_000_000_000
    stats.slot_acquired(0)
    stats.slot_acquired(0)
    stats.slot_released(0, 2 * s)
    stats.slot_acquired(2 * s)
    stats.slot_released(2 * s, 3 * s)
    stats.slot_released(0, 10 * s)
    return stats


def test_utilisation_while_sending_leaves_the_final_drain_out():
    """Two slots: A busy 0-10 s (one long answer), B 0-2 s, then B's last lease at 2 s, busy 2-3 s; then
    nothing is left to send. While sending (0-2 s) both slots were busy; the drain 2-10 s does not count."""
    stats = two_slots_busy_then_draining()
    slots = stats.slots(parallel=2)
    assert slots["utilisation"] == 0.65 and slots["window_s"] == 10.0  # 13 slot-s of 20
    assert slots["sending_s"] == 2.0 and slots["utilisation_sending"] == 1.0  # 4 slot-s of 4


def test_occupancy_per_second_shows_where_the_slots_stood_idle():
    """The same two slots as above, second by second: both busy in seconds 0-1, one in 2-9; and a lease of
    half a second inside one bucket counts half a slot there."""
    stats, s = two_slots_busy_then_draining(), 1_000_000_000
    assert stats.slots(parallel=2)["occupancy_per_s"] == [2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    stats.slot_acquired(10 * s + s // 4)
    stats.slot_released(10 * s + s // 4, 10 * s + 3 * s // 4)
    assert stats.slots(parallel=2)["occupancy_per_s"][10] == 0.5


def test_utilisation_from_the_first_row_leaves_a_lone_early_request_out():
    """A count request at 0-1 s, then the rows from 10 s on (A 10-14 s, B 10-12 s, B again 12-13 s, the last lease):
    measured from the second lease the two slots were always busy; from the first, mostly idle."""
    from chunkwise.harness.sim.stats import SimStats

    stats, s = SimStats(), 1_000_000_000
    for start, end in ((0, s), (10 * s, 12 * s), (12 * s, 13 * s), (10 * s, 14 * s)):
        stats.slot_acquired(start)
        stats.slot_released(start, end)
    after = stats.slots_after(parallel=2, skip_leases=1)
    assert after["first_lease_ns"] == 10 * s and after["sending_s"] == 2.0 and after["utilisation_sending"] == 1.0
    assert stats.slots_after(parallel=2, skip_leases=0)["utilisation_sending"] == round(5 / 24, 4)
    assert stats.slots_after(parallel=2, skip_leases=4)["utilisation_sending"] is None
