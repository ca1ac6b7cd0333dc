"""Ollama eras: the behaviours `--ollama-version` selects (chunkwise/harness/sim/era.py).

Sources (github.com/ollama/ollama):
- v0.13.0:runner/llamarunner/runner.go:143-153: keep num_keep(+BOS) and the tail, exactly num_ctx.
- v0.30.0:llm/llama_server.go:277-294: cut to num_ctx - 1.
- v0.33.0-rc2:llm/llama_server.go:279-331 (and llama_server_test.go:130-146): num_ctx - max((num_ctx - keep) / 2, 1).
- v0.30.0:llm/llama_server.go:1470: prompt_eval_count = the uncached tokens only; fixed in v0.30.1
  (#16428; v0.33.0-rc2:llm/llama_server.go:1511-1513: cache_n + prompt_n).
- v0.33.0-rc2:version/version.go: a source build reports "0.0.0".
"""

from __future__ import annotations

import httpx
import pytest

from chunkwise.harness.sim.era import CURRENT_VERSION, engine_of, era_of
from chunkwise.harness.sim.templates import CHATML
from chunkwise.harness.sim.templates import chat_prompt_tokens as count


def chat_prompt_tokens(messages: list) -> int:
    return count(messages, template=CHATML)  # qwen2.5's template

SYSTEM = {"role": "system", "content": "You label support tickets carefully. " * 30}


def chat(url: str, messages: list, **options) -> dict:
    body = {"model": "qwen2.5:7b", "messages": messages, "stream": False, "options": options}
    return httpx.post(f"{url}/api/chat", json=body, timeout=30, trust_env=False).json()


@pytest.mark.parametrize("version,expected", [("0.13.0", 512), ("0.30.0", 511), ("0.30.10", 511),
                                              ("0.30.11", 512 - (512 - 4) // 2), (CURRENT_VERSION, 258),
                                              ("0.0.0", 258)])
def test_truncation_of_each_era(sim_factory, version, expected):
    sim = sim_factory(ollama_version=version)
    body = chat(sim.url, [{"role": "user", "content": " ".join(["x"] * 600)}], num_ctx=512)
    assert body["prompt_eval_count"] == expected


def test_0_30_0_counts_only_the_uncached_prompt_tokens(sim_factory):
    sim = sim_factory(ollama_version="0.30.0")
    first = chat(sim.url, [SYSTEM, {"role": "user", "content": "Ticket 1: printer on fire."}])
    second = chat(sim.url, [SYSTEM, {"role": "user", "content": "Ticket 2: screen is blank."}])
    full = chat_prompt_tokens([SYSTEM, {"role": "user", "content": "Ticket 2: screen is blank."}])
    ticket1 = {"role": "user", "content": "Ticket 1: printer on fire."}
    assert first["prompt_eval_count"] == chat_prompt_tokens([SYSTEM, ticket1])
    assert second["prompt_eval_count"] < full / 4  # the system prompt came from the cache and is not counted
    fixed = sim_factory(ollama_version="0.30.1")
    chat(fixed.url, [SYSTEM, {"role": "user", "content": "Ticket 1: printer on fire."}])
    again = chat(fixed.url, [SYSTEM, {"role": "user", "content": "Ticket 2: screen is blank."}])
    assert again["prompt_eval_count"] == full


def test_era_switches():
    assert era_of("0.0.0") == era_of(CURRENT_VERSION)
    assert era_of(CURRENT_VERSION).llama_server and not era_of("0.29.9").llama_server
    assert era_of("0.12.4").thinks_by_default and not era_of("0.12.3").thinks_by_default
    assert era_of("0.12.6").truncate_fields and not era_of("0.12.5").truncate_fields
    assert era_of("0.30.0").uncached_count and not era_of("0.30.1").uncached_count
    assert era_of("0.29.9").first_token_in_prompt and not era_of("0.30.0").first_token_in_prompt
    assert era_of("0.24.0").zero_predict_unbounded and not era_of("0.30.0").zero_predict_unbounded
    v24 = era_of("0.24.0")
    assert [engine_of(v24, a) for a in ("gemma3", "gptoss", "llama", "gemma2")] == [
        "ollama", "ollama", "llamarunner", "llamarunner"]
    assert engine_of(era_of(CURRENT_VERSION), "llama") == "llama-server"


def test_go_runners_count_the_first_token_as_prompt_time(sim_factory):
    """v0.24.0:runner/ollamarunner/runner.go:750-754,984-986: a one-token answer has no eval_duration (Go
    omits the zero), a longer one's prompt_eval_duration covers the first token; v0.30+ does not."""
    old = sim_factory(ollama_version="0.24.0", prefill_tps=1000, decode_tps=100)
    one = chat(old.url, [{"role": "user", "content": "hi"}], num_predict=1)
    assert "eval_duration" not in one and one["eval_count"] == 1
    assert one["prompt_eval_duration"] >= 10_000_000  # 10 ms: the one decoded token
    new = sim_factory(prefill_tps=1000, decode_tps=100)
    assert 10_000_000 <= chat(new.url, [{"role": "user", "content": "hi"}], num_predict=1)["eval_duration"] < 10_001_000


def test_num_predict_zero_sets_no_limit_in_the_go_runner_eras(sim_factory):
    """v0.24.0:llm/server.go:1621-1623 caps only negative or > 10 x num_ctx values, and the runners stop on
    a count only when it is > 0: the answer runs to its natural end (here 300 tokens, past 10 x 16)."""
    old = sim_factory(ollama_version="0.24.0", answer_tokens=(300, 300))
    assert chat(old.url, [{"role": "user", "content": "hi"}], num_predict=0, num_ctx=16)["eval_count"] == 300
    new = sim_factory(answer_tokens=(300, 300))
    assert chat(new.url, [{"role": "user", "content": "hi"}], num_predict=0, num_ctx=16)["eval_count"] == 160
