"""Failures that Ollama really produces: an error line inside a 200 stream, and persistent 500s.

Sources (github.com/ollama/ollama, tag v0.33.0-rc2 unless noted):
- server/routes.go:2109-2123: an error that arrives after the first byte is written as an NDJSON
  `{"error": ...}` line and the 200 stays; before any byte it sets the status (default 500).
- server/routes.go:2406-2418: with stream false the handler answers the error with its status (500).
- llm/llama_server.go:1759-1767: "an error was encountered while running the model: <msg>" when
  llama-server's connection drops mid-answer.
- server/sched.go:575-600, 733-738: a failed load goes to that request's errCh; the next request
  tries the load again. server/routes.go:3107-3118 handleScheduleError: default 500 with err.Error().
- llm/llama_server.go:1306-1309: "llama-server process has terminated: exit status 1: <last error line>";
  v0.13.0:llm/server.go:1304: "llama runner process has terminated: <error>".
"""

from __future__ import annotations

import json

import httpx

from chunkwise.harness.sim.faults import STREAM_CRASH

BODY = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "Say something."}]}


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", json=body, timeout=30, trust_env=False)


def test_stream_error_line_inside_a_200_after_some_tokens(sim_factory):
    sim = sim_factory(stream_error_rate=1.0, answer_tokens=(20, 20))
    r = post(sim.url, BODY)
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1] == {"error": STREAM_CRASH}
    assert STREAM_CRASH.startswith("an error was encountered while running the model: ")
    tokens = lines[:-1]
    assert 1 <= len(tokens) < 20 and all(t["done"] is False and t["message"]["content"] for t in tokens)
    stats = sim.stats()
    assert stats["faults"]["stream_error"] == 1 and stats["answered_total"] == 0


def test_stream_error_without_streaming_is_a_500(sim_factory):
    sim = sim_factory(stream_error_rate=1.0)
    r = post(sim.url, {**BODY, "stream": False})
    assert r.status_code == 500 and r.json() == {"error": STREAM_CRASH}
    assert sim.stats()["answered_total"] == 0


def test_stream_error_is_a_fresh_draw_per_receipt(sim_factory):
    sim = sim_factory(stream_error_rate=0.5, seed=1)
    outcomes = []
    for i in range(20):
        text = post(sim.url, {**BODY, "messages": [{"role": "user", "content": f"q{i}"}]}).text
        outcomes.append('"error"' in text.splitlines()[-1])
    assert 3 <= sum(outcomes) <= 17


def test_model_that_never_loads_fails_every_request_the_same_way(sim_factory):
    sim = sim_factory(load_failure="load", load_ms=20)
    answers = [post(sim.url, {**BODY, "messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(3)]
    assert [r.status_code for r in answers] == [500, 500, 500]
    messages = {r.json()["error"] for r in answers}
    assert len(messages) == 1
    message = messages.pop()
    assert message.startswith("llama-server process has terminated: exit status 1: error loading model")
    stats = sim.stats()
    assert stats["faults"]["load_failure"] == 3 and stats["loads"] == 0  # each request tried the load again
    assert httpx.get(f"{sim.url}/api/ps", trust_env=False).json() == {"models": []}


def test_go_runner_era_words_the_load_failure_its_way(sim_factory):
    sim = sim_factory(load_failure="load", ollama_version="0.13.0")
    r = post(sim.url, BODY)
    assert r.status_code == 500
    assert r.json()["error"].startswith("llama runner process has terminated: error loading model")


def test_out_of_memory_at_and_above_a_num_ctx(sim_factory):
    sim = sim_factory(load_failure="oom", oom_num_ctx=8192)
    small = post(sim.url, {**BODY, "options": {"num_ctx": 4096}})
    assert small.status_code == 200
    for num_ctx in (8192, 16384):
        r = post(sim.url, {**BODY, "options": {"num_ctx": num_ctx}})
        assert r.status_code == 500
        oom = "llama-server process has terminated: exit status 1: cudaMalloc failed: out of memory"
        assert r.json() == {"error": oom}
    assert sim.stats()["faults"]["load_failure"] == 2


def test_a_failing_simulator_becomes_healthy_at_runtime_and_after_a_restart(sim_factory):
    sim = sim_factory(load_failure="load")
    assert post(sim.url, BODY).status_code == 500
    sim.configure(load_failure="none")
    assert post(sim.url, BODY).status_code == 200
    sim.configure(load_failure="oom")  # the loaded runner dies: the next request must load again and fails
    assert post(sim.url, BODY).status_code == 500
    port = sim.url
    sim.restart_with(load_failure="none")  # down, then up again on the same port with other options
    assert sim.url == port and post(sim.url, BODY).status_code == 200
