"""Context handling: num_ctx clamp, chat history pruning (stage 1) and token truncation (stage 2)."""

from __future__ import annotations

import httpx
import pytest

from chunkwise.harness.sim.profiles import resolve
from chunkwise.harness.sim.prompt import INPUT_TOO_LONG, cut_tokens, prune_messages, render_messages
from chunkwise.harness.sim.templates import GEMMA, LLAMA3, TEMPLATES, chat_prompt_tokens, render_chat


def words(n: int) -> str:
    """Content of exactly n tokens ("x x x ..." is one token per word)."""
    return " ".join(["x"] * n)


def msg(role: str, content_tokens: int) -> dict:
    """A message costing content_tokens + 5 template tokens (every family's template but harmony's)."""
    return {"role": role, "content": words(content_tokens)}


def chat(url: str, model: str, messages: list, **extra) -> httpx.Response:
    body = {"model": model, "messages": messages, "stream": False, **extra}
    return httpx.post(f"{url}/api/chat", json=body, timeout=30, trust_env=False)


def overhead(model: str) -> int:
    """Template tokens of a one-message chat prompt for `model` (BOS, the message's, the generation prompt)."""
    profile = resolve(model)
    assert profile is not None
    return chat_prompt_tokens([msg("user", 0)], template=TEMPLATES[profile.template])


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_render_messages_equals_render_chat(template):
    messages = [{"role": "system", "content": "Be brief, please."},
                {"role": "user", "content": "Hi  there!\n\nWhat's 2+2?"},
                {"role": "assistant", "content": ""}, {"content": "no role"}]
    t = TEMPLATES[template]
    assert render_messages(messages, template=t) == render_chat(messages, template=t)
    assert len(render_chat(messages, template=t)) == chat_prompt_tokens(messages, template=t)


def test_template_token_counts_per_family():
    """BOS + generation prompt + per message: llama3 1 + 4 + 5, gemma 1 + 3 + 5 (9 for an empty user
    message, as a real Ollama 0.24.0 counts it for gemma3-270m), chatml 0 + 3 + 5."""
    assert chat_prompt_tokens([msg("user", 7)]) == 1 + 4 + 5 + 7 == len(render_chat([msg("user", 7)], template=LLAMA3))
    assert chat_prompt_tokens([{"role": "user", "content": ""}], template=GEMMA) == 9
    assert [overhead(m) for m in ("llama3.1:8b", "gemma3-270m", "qwen2.5:7b", "gpt-oss:20b")] == [10, 9, 8, 6]


def test_cut_tokens_keeps_head_and_tail():
    tokens = list(range(10))
    assert cut_tokens(tokens, 6, 2, False, "keep-tail", True) == [0, 1, 6, 7, 8, 9]
    assert cut_tokens(tokens, 6, 2, True, "keep-tail", True) == [0, 1, 2, 7, 8, 9]  # BOS counts in num_keep
    assert cut_tokens(tokens, 6, 2, False, "half", True) == [0, 1, 8, 9]  # 6 - (6 - 2) // 2 = 4
    assert cut_tokens(tokens, 10, 4, False, "keep-tail", True) == tokens  # exactly num_ctx fits
    assert len(cut_tokens(tokens, 10, 4, False, "half", True)) == 7  # half mode cuts above num_ctx - 1
    with pytest.raises(Exception, match=INPUT_TOO_LONG):
        cut_tokens(tokens, 6, 2, False, "keep-tail", False)


def test_keep_tail_truncates_to_exactly_num_ctx(sim_factory):
    sim = sim_factory(ollama_version="0.13.0")  # Go-runner era (v0.4-v0.29)
    over = [msg("user", 5000)]
    body = chat(sim.url, "llama3.1:8b", over).json()
    assert body["prompt_eval_count"] == 4096  # server default num_ctx
    body = chat(sim.url, "llama3.1:8b", over, options={"num_ctx": 2048}).json()
    assert body["prompt_eval_count"] == 2048
    fits = [msg("user", 4096 - overhead("llama3.1:8b"))]
    assert chat(sim.url, "llama3.1:8b", fits).json()["prompt_eval_count"] == 4096


@pytest.mark.parametrize("model,num_ctx,expected", [("qwen2.5:7b", 4096, 2050), ("llama3.1:8b", 32768, 16387),
                                                    ("llama3.1:8b", 4096, 2051)])
def test_half_mode_matches_ollama_0_30_11_counts(sim_factory, model, num_ctx, expected):
    sim = sim_factory(truncation="half")
    body = chat(sim.url, model, [msg("user", num_ctx + 500)], options={"num_ctx": num_ctx}).json()
    assert body["prompt_eval_count"] == expected
    # a prompt of exactly num_ctx tokens is already cut in this mode (Ollama cuts above num_ctx - 1)
    body = chat(sim.url, model, [msg("user", num_ctx - overhead(model))], options={"num_ctx": num_ctx}).json()
    assert body["prompt_eval_count"] == expected


def refused(version: str, tokens: int, num_ctx: int = 4096) -> str:
    """The 400 text of an over-long prompt: the Go runners' sentence, or from 0.30 llama-server's JSON body
    as Ollama passes it on (tests/fixtures/ollama-0.33.0/chat_overlong_truncate_false.json)."""
    if version < "0.30":
        return INPUT_TOO_LONG
    return (f'{{"error":{{"code":400,"message":"request ({tokens} tokens) exceeds the available context size '
            f'({num_ctx} tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":{tokens},'
            f'"n_ctx":{num_ctx}}}}}')


@pytest.mark.parametrize("version", ["0.24.0", "0.33.0"])
def test_error_mode_and_truncate_false_give_400(sim_factory, version):
    sim = sim_factory(truncation="error", ollama_version=version)
    long = [msg("user", 5000)]
    r = chat(sim.url, "llama3.1:8b", long)
    assert r.status_code == 400 and r.json() == {"error": refused(version, chat_prompt_tokens(long))}
    assert chat(sim.url, "llama3.1:8b", [msg("user", 100)]).status_code == 200
    sim.configure(truncation="keep-tail")
    r = chat(sim.url, "llama3.1:8b", long, truncate=False)
    assert r.status_code == 400 and r.json()["error"] == refused(version, chat_prompt_tokens(long))
    r = httpx.post(f"{sim.url}/api/generate", json={"model": "llama3.1:8b", "prompt": words(5000), "truncate": False,
                                                    "stream": False}, trust_env=False)
    assert r.status_code == 400
    # truncate:false also disables stage 1: a history that pruning would fix is refused
    history = [msg("user", 3000), msg("assistant", 500), msg("user", 1000)]
    assert chat(sim.url, "llama3.1:8b", history, truncate=False).status_code == 400
    assert chat(sim.url, "llama3.1:8b", history).json()["prompt_eval_count"] == chat_prompt_tokens(history[1:])


def test_stage1_drops_older_messages_but_keeps_system_and_last(sim):
    s, u1, a1, u2, a2, u3 = (msg("system", 96), msg("user", 996), msg("assistant", 996), msg("user", 996),
                             msg("assistant", 996), msg("user", 496))
    history = [s, u1, a1, u2, a2, u3]
    kept, dropped = prune_messages(history, 3000)
    assert kept == [s, u2, a2, u3] and dropped == 2
    body = chat(sim.url, "llama3.1:8b", history, options={"num_ctx": 3000}).json()
    assert body["prompt_eval_count"] == chat_prompt_tokens([s, u2, a2, u3]) == 2609

    # a system message in the middle moves to the front when the messages before it are dropped
    late_system = [u1, msg("system", 46), a1, u3]
    kept, dropped = prune_messages(late_system, 600)
    assert kept == [late_system[1], u3] and dropped == 2


def test_stage2_cuts_a_single_oversized_last_message(sim_factory):
    sim = sim_factory(ollama_version="0.13.0")
    history = [msg("system", 96), msg("user", 996), msg("user", 4996)]
    body = chat(sim.url, "llama3.1:8b", history).json()
    assert body["prompt_eval_count"] == 4096
    assert prune_messages(history, 4096)[0] == [history[0], history[2]]


def test_generate_truncates_and_num_ctx_is_clamped_to_training_context(sim_factory):
    sim = sim_factory(ollama_version="0.13.0")
    r = httpx.post(f"{sim.url}/api/generate", json={"model": "gemma2:9b", "prompt": words(9000), "stream": False,
                                                    "options": {"num_ctx": 100000}}, trust_env=False).json()
    assert r["prompt_eval_count"] == 8192  # gemma2's context_length
    assert len(r["context"]) == chat_prompt_tokens([{"role": "user", "content": words(9000)}],
                                                   template=GEMMA) + r["eval_count"]
    ps = httpx.get(f"{sim.url}/api/ps", trust_env=False).json()["models"][0]
    assert ps["context_length"] == 8192
