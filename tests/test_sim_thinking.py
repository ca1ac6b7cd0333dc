"""Thinking-capable models: capabilities, think by default, `think` values and their errors.

Sources (github.com/ollama/ollama, tag v0.33.0-rc2):
- types/model/capability.go:6-13: the capability names ("completion", "tools", "thinking", "vision", ...).
- server/routes.go:2614-2631 (chat), 453-463 (generate): a model with the thinking capability gets
  `think: true` when the request sets none; a truthy `think` on any other model is
  400 `"<model>" does not support thinking`.
- api/types.go:1202-1222 ThinkValue.UnmarshalJSON: true/false or "high"/"medium"/"low"/"max", else
  400 `invalid think value: "x" (must be ...)`; api/types.go:202,909: `thinking` is omitempty.
- docs/capabilities/thinking.mdx:12,19: most models take booleans or levels; gpt-oss takes levels and
  "the trace cannot be fully disabled".
- Era: the default-on behaviour starts in v0.12.4 (absent in v0.12.3, research ollama-fidelity-audit.md #14).
"""

from __future__ import annotations

import json

import httpx
import pytest

from chunkwise.harness.sim.tokenizer import count_tokens

MESSAGES = [{"role": "user", "content": "How many r are in strawberry?"}]


def chat(url: str, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "stream": False, **extra}
    return httpx.post(f"{url}/api/chat", json=body, timeout=30, trust_env=False)


def show(url: str, model: str) -> dict:
    return httpx.post(f"{url}/api/show", json={"model": model}, trust_env=False).json()


def test_capabilities_are_real_ones(sim):
    assert show(sim.url, "qwen3:8b")["capabilities"] == ["completion", "tools", "thinking"]
    assert show(sim.url, "gpt-oss:20b")["capabilities"] == ["completion", "tools", "thinking"]
    assert "thinking" not in show(sim.url, "llama3.1:8b")["capabilities"]
    assert show(sim.url, "gemma2:9b")["capabilities"] == ["completion"]  # gemma2 has no tools template


def test_thinking_model_thinks_by_default_and_thinking_counts_in_eval_count(sim_factory):
    sim = sim_factory(answer_tokens=(20, 20), thinking_tokens=(40, 40))
    body = chat(sim.url, "qwen3:8b").json()
    thinking, content = body["message"]["thinking"], body["message"]["content"]
    assert count_tokens(thinking) == 40 and count_tokens(content) == 20
    assert body["eval_count"] == 60 and body["done_reason"] == "stop"


def test_thinking_eats_num_predict_and_leaves_an_empty_answer(sim_factory):
    sim = sim_factory(answer_tokens=(20, 20), thinking_tokens=(40, 40))
    body = chat(sim.url, "qwen3:8b", options={"num_predict": 30}).json()
    assert body["message"]["content"] == "" and count_tokens(body["message"]["thinking"]) == 30
    assert body["done_reason"] == "length" and body["eval_count"] == 30
    partial = chat(sim.url, "qwen3:8b", options={"num_predict": 50}).json()
    assert count_tokens(partial["message"]["content"]) == 10 and partial["done_reason"] == "length"


def test_think_false_turns_it_off_and_levels_scale_it(sim_factory):
    sim = sim_factory(answer_tokens=(20, 20), thinking_tokens=(40, 40))
    off = chat(sim.url, "qwen3:8b", think=False).json()
    assert "thinking" not in off["message"] and off["eval_count"] == 20
    low = chat(sim.url, "qwen3:8b", think="low").json()
    high = chat(sim.url, "qwen3:8b", think="high").json()
    assert count_tokens(low["message"]["thinking"]) == 20 and count_tokens(high["message"]["thinking"]) == 60


def test_gpt_oss_cannot_stop_thinking(sim_factory):
    sim = sim_factory(thinking_tokens=(40, 40))
    body = chat(sim.url, "gpt-oss:20b", think=False).json()
    assert body["message"].get("thinking")


def test_streamed_thinking_comes_first_with_empty_content(sim_factory):
    sim = sim_factory(answer_tokens=(5, 5), thinking_tokens=(6, 6))
    r = httpx.post(f"{sim.url}/api/chat", json={"model": "qwen3:8b", "messages": MESSAGES}, trust_env=False)
    lines = [json.loads(line) for line in r.text.splitlines()]
    parts = [(line["message"]["content"], line["message"].get("thinking", "")) for line in lines[:-1]]
    assert [bool(t) for _, t in parts] == [True] * 6 + [False] * 5
    assert all(c == "" for c, _ in parts[:6]) and all(c for c, _ in parts[6:])
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 11


def test_generate_carries_thinking_in_its_own_field(sim_factory):
    sim = sim_factory(thinking_tokens=(8, 8))
    body = httpx.post(f"{sim.url}/api/generate", json={"model": "qwen3:8b", "prompt": "hi", "stream": False},
                      trust_env=False).json()
    assert count_tokens(body["thinking"]) == 8 and body["response"]


@pytest.mark.parametrize("think", [True, "low", "high"])
def test_think_on_a_model_without_the_capability_is_400(sim, think):
    r = chat(sim.url, "llama3.1", think=think)
    assert r.status_code == 400 and r.json() == {"error": '"llama3.1" does not support thinking'}
    assert chat(sim.url, "llama3.1", think=False).status_code == 200


@pytest.mark.parametrize("think", ["false", "extreme", ""])
def test_invalid_think_values_are_400(sim, think):
    r = chat(sim.url, "qwen3:8b", think=think)
    assert r.status_code == 400
    levels = '"high", "medium", "low", "max", true, or false'
    assert r.json()["error"] == f'invalid think value: "{think}" (must be {levels})'


def test_before_0_12_4_thinking_was_off_unless_asked(sim_factory):
    sim = sim_factory(ollama_version="0.12.3")
    assert "thinking" not in chat(sim.url, "qwen3:8b").json()["message"]
    assert chat(sim.url, "qwen3:8b", think=True).json()["message"]["thinking"]
