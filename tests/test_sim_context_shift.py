"""Context shift: a prompt that fits but leaves no room for the answer.

Sources (github.com/ollama/ollama, tag v0.33.0-rc2):
- server/routes.go:2779: `shift` defaults to true; llm/llama_server.go:789-800 appendContextShiftArgs:
  llama-server runs with `--context-shift --keep <num_keep>`. When the context fills, llama.cpp's
  server discards half of the tokens after n_keep and goes on; done_reason stays "stop" and
  prompt_eval_count is unchanged (research ollama-fidelity-audit.md #21).
- llm/llama_server.go:1713-1716: stop_type "limit" -> done_reason "length" (`shift: false`: the
  generation stops when the context is full).
- server/sched.go:1413-1419: a change of the shift setting restarts the runner (reload).
"""

from __future__ import annotations

import httpx

from chunkwise.harness.sim.answer import context_shifts

NUM_CTX = 256


def chat(url: str, content_tokens: int, **extra) -> httpx.Response:
    body = {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": " ".join(["x"] * content_tokens)}],
            "stream": False, "options": {"num_ctx": NUM_CTX}, **extra}
    return httpx.post(f"{url}/api/chat", json=body, timeout=30, trust_env=False)


def test_shift_arithmetic():
    assert context_shifts(100, 50, 256, 4) == (0, 150)
    # 250 + 6 fills 256; half of 252 is dropped (126), then 44 more tokens: 130 + 44
    assert context_shifts(250, 50, 256, 4) == (1, 174)


def test_an_answer_that_overflows_shifts_and_still_says_stop(sim_factory):
    sim = sim_factory(answer_tokens=(50, 50))
    prompt = NUM_CTX - 20 - 8  # content tokens; 8 template tokens (qwen2.5's chatml: 5 + 3): 236 of 256
    r = chat(sim.url, prompt)
    body = r.json()
    assert body["done_reason"] == "stop" and body["eval_count"] == 50
    assert body["prompt_eval_count"] == NUM_CTX - 20  # unchanged by the shift
    assert r.headers["X-Sim-Context-Shifts"] == "1"
    assert sim.stats()["context_shifts"] == 1
    fits = chat(sim.url, 10)
    assert "X-Sim-Context-Shifts" not in fits.headers


def test_shift_false_stops_at_the_context_with_length(sim_factory):
    sim = sim_factory(answer_tokens=(50, 50))
    body = chat(sim.url, NUM_CTX - 20 - 8, shift=False).json()
    assert body["done_reason"] == "length" and body["eval_count"] == 20
    assert sim.stats()["context_shifts"] == 0


def test_changing_shift_reloads_the_runner(sim_factory):
    sim = sim_factory()
    chat(sim.url, 10)
    chat(sim.url, 10, shift=False)
    chat(sim.url, 10, shift=False)
    assert sim.stats()["loads"] == 2


def test_go_runner_era_ignored_truncate_and_shift_before_0_12_6(sim_factory):
    # truncate/shift were added to the chat and generate requests in v0.12.6 (commit 6544e1473, #12582)
    sim = sim_factory(answer_tokens=(50, 50), ollama_version="0.12.5")
    body = chat(sim.url, NUM_CTX - 20 - 8, shift=False).json()
    assert body["done_reason"] == "stop" and body["eval_count"] == 50
