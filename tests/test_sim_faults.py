"""Injected faults (seeded, reproducible) and the /sim/stats, /sim/reset, /sim/config endpoints."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from chunkwise.harness.sim.faults import RUNNER_STOPPED, pick_fault
from chunkwise.harness.sim.fingerprint import chat_fingerprint, generate_fingerprint, request_fingerprint
from chunkwise.harness.sim.options import SimOptions

METRICS = (
    "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"
)


def body(i: int = 0, **extra) -> dict:
    return {"model": "llama3.1:8b", "messages": [{"role": "user", "content": f"item {i}"}], "stream": False, **extra}


def post(url: str, payload: dict, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", json=payload, timeout=timeout, trust_env=False)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_fingerprint_ignores_options_and_is_importable():
    a = request_fingerprint("/api/chat", body(1, options={"num_ctx": 8192}, stream=True))
    assert a == chat_fingerprint("llama3.1:8b", body(1)["messages"]) and len(a) == 32
    assert a != chat_fingerprint("llama3.1:8b", body(2)["messages"])
    expected = request_fingerprint("generate", {"model": "m", "prompt": "p", "system": ""})
    assert generate_fingerprint("m", "p") == expected
    assert generate_fingerprint("m", "p", "s") != generate_fingerprint("m", "p")


def test_error_fault_is_500_with_ollama_message(sim_factory):
    sim = sim_factory(fail_rate=1.0)
    r = post(sim.url, body())
    assert r.status_code == 500 and r.json() == {"error": RUNNER_STOPPED}
    stats = sim.stats()
    assert stats["faults"]["error"] == 1 and stats["answered_total"] == 0 and stats["received_total"] == 1


@pytest.mark.parametrize("stream", [False, True])
def test_reset_fault_breaks_the_response(sim_factory, stream):
    sim = sim_factory(reset_rate=1.0, decode_tps=10_000)
    with httpx.Client(trust_env=False, timeout=30) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with client.stream("POST", f"{sim.url}/api/chat", json=body(stream=stream)) as response:
                assert response.status_code == 200  # headers arrived before the connection broke
                for _ in response.iter_lines():
                    pass
    stats = sim.stats()
    assert stats["requests"]["/api/chat"] == {"reset": 1} and stats["answered_total"] == 0
    assert stats["faults"]["reset"] == 1


def test_incomplete_fault_never_reaches_done(sim_factory):
    sim = sim_factory(incomplete_rate=1.0)
    r = post(sim.url, body())
    assert r.status_code == 200
    data = r.json()
    assert data["done"] is False and not any(k in data for k in METRICS) and data["message"]["content"]
    lines = [json.loads(line) for line in post(sim.url, body(1, stream=True)).text.splitlines()]
    assert lines and all(line["done"] is False for line in lines)
    stats = sim.stats()
    assert stats["faults"]["incomplete"] == 2 and stats["answered_total"] == 0
    assert stats["requests"]["/api/chat"] == {"200": 2}


def test_stall_then_client_gives_up_is_499_and_not_answered(sim_factory):
    sim = sim_factory(stall_rate=1.0, stall_s=5.0)
    with pytest.raises(httpx.ReadTimeout):
        post(sim.url, body(), timeout=0.3)
    wait_for(lambda: sim.stats()["requests"].get("/api/chat", {}).get("499") == 1)
    stats = sim.stats()
    assert stats["answered_total"] == 0 and stats["in_flight"] == 0 and stats["faults"]["stall"] == 1
    sim.configure(stall_s=0.2)
    r = post(sim.url, body(1))
    assert r.status_code == 200 and r.json()["done"] and r.json()["total_duration"] >= 200_000_000
    assert sim.stats()["answered_total"] == 1


def statuses(url: str, n: int) -> list[int]:
    return [post(url, body(i)).status_code for i in range(n)]


def test_faults_are_reproducible_and_independent_of_concurrency(sim_factory):
    sim = sim_factory(fail_rate=0.5, seed=11)
    first = statuses(sim.url, 30)
    assert 5 < first.count(500) < 25
    sim.reset()
    assert statuses(sim.url, 30) == first
    sim.reset()
    results: dict[int, int] = {}

    def send(i):
        results[i] = post(sim.url, body(i)).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in reversed(range(30))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(30)] == first
    sim.reset()
    sim.configure(seed=12)
    assert statuses(sim.url, 30) != first


def test_a_retried_request_gets_a_fresh_draw(sim_factory):
    sim = sim_factory(fail_rate=0.5, seed=3)
    fp = chat_fingerprint("llama3.1:8b", body()["messages"])
    expected = [500 if pick_fault(SimOptions(fail_rate=0.5, seed=3), fp, n) == "error" else 200 for n in range(12)]
    assert 200 in expected and 500 in expected
    assert [post(sim.url, body()).status_code for _ in range(12)] == expected
    entry = sim.stats()["fingerprints"][fp]
    assert entry == {"received": 12, "answered": expected.count(200)}


def test_stats_shape_and_summary(sim):
    post(sim.url, body(1))
    post(sim.url, body(1))
    post(sim.url, body(2))
    httpx.post(f"{sim.url}/api/generate", json={"model": "llama3.1:8b", "prompt": "p", "stream": False},
               trust_env=False)
    post(sim.url, {"model": "nope", "messages": []})
    httpx.get(f"{sim.url}/api/tags", trust_env=False)
    stats = sim.stats()
    assert stats["requests"] == {
        "/api/chat": {"200": 3, "404": 1}, "/api/generate": {"200": 1}, "/api/tags": {"200": 1}
    }
    assert stats["received_total"] == 5 and stats["answered_total"] == 4 and stats["loads"] == 1
    assert stats["max_answered_per_fingerprint"] == 2 and stats["fingerprints_answered_more_than_once"] == 1
    fp1 = chat_fingerprint("llama3.1:8b", body(1)["messages"])
    assert stats["fingerprints"][fp1] == {"received": 2, "answered": 2}
    assert stats["fingerprints"][generate_fingerprint("llama3.1:8b", "p")] == {"received": 1, "answered": 1}
    assert stats["distinct_fingerprints"] == 4
    slim = sim.stats(fingerprints=False)
    assert "fingerprints" not in slim and slim["received_total"] == 5
    sim.reset()
    cleared = sim.stats()
    assert cleared["received_total"] == 0 and cleared["fingerprints"] == {} and cleared["requests"] == {}
    assert httpx.get(f"{sim.url}/api/ps", trust_env=False).json()["models"] == []


def test_version_show_tags_ps_never_fault(sim_factory):
    sim = sim_factory(fail_rate=1.0)
    with httpx.Client(base_url=sim.url, trust_env=False) as c:
        assert c.get("/api/version").status_code == 200
        assert c.get("/api/tags").status_code == 200
        assert c.post("/api/show", json={"model": "llama3.1:8b"}).status_code == 200
        assert c.get("/api/ps").status_code == 200


def test_config_changes_at_runtime_and_rejects_bad_values(sim):
    assert post(sim.url, body()).status_code == 200
    config = sim.configure(fail_rate=1.0)
    assert config["fail_rate"] == 1.0
    assert post(sim.url, body(1)).status_code == 500
    sim.configure(fail_rate=0.0)
    assert post(sim.url, body(2)).status_code == 200
    with httpx.Client(base_url=sim.url, trust_env=False) as c:
        bad = c.post("/sim/config", json={"fail_rate": 0.8, "reset_rate": 0.8})
        assert bad.status_code == 400 and "add up to" in bad.json()["error"]
        assert c.post("/sim/config", json={"port": 1}).status_code == 400
        assert c.post("/sim/config", json={"no_such": 1}).status_code == 400
        assert c.post("/sim/config", json={"truncation": "middle"}).status_code == 400
        assert c.get("/sim/config").json()["fail_rate"] == 0.0


def test_fingerprint_fast_path_equals_canonical_json():
    import hashlib

    cases = [
        [{"role": "system", "content": 'quote " backslash \\ tab \t nul \x00 line\u2028 é 中 😀'},
         {"role": "user", "content": ""}],
        [{"content": "key order differs", "role": "user"}],
        [{"role": "user", "content": "extra keys take the generic path", "images": []}],
        [],
    ]
    for messages in cases:
        canonical = json.dumps({"model": "m\u00e9", "messages": messages}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        assert chat_fingerprint("m\u00e9", messages) == hashlib.sha256(canonical.encode()).hexdigest()[:32]


def test_fingerprint_with_a_cached_first_message_equals_canonical_json():
    """The hash state after the first message is cached (a batch repeats its system prompt): a second
    request with the same first message and other messages after it still hashes all of its text."""
    import hashlib

    system = {"role": "system", "content": "You are terse. \u00e9 \u4e2d"}
    for messages in ([system, {"role": "user", "content": "one"}], [system, {"role": "user", "content": "two"}],
                     [system], [system, {"role": "user", "content": "two"}, {"role": "assistant", "content": "x"}]):
        canonical = json.dumps({"model": "llama3.1:8b", "messages": messages}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        assert chat_fingerprint("llama3.1:8b", messages) == hashlib.sha256(canonical.encode()).hexdigest()[:32]
