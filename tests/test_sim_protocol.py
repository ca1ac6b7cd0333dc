"""The simulator speaks Ollama's HTTP API: the official `ollama` client, JSON shapes, error statuses."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import ollama
import pytest

from chunkwise.harness.sim.era import CURRENT_VERSION
from chunkwise.harness.sim.profiles import ALIASES, PROFILES, resolve
from chunkwise.harness.sim.templates import CHATML, chat_prompt_tokens
from chunkwise.harness.sim.tokenizer import count_tokens
from chunkwise.ollama.kv import kv_bytes_per_token

MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three rivers."}]
METRICS = (
    "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"
)


def http(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, trust_env=False, timeout=30)


def test_version_and_simulator_marks(sim):
    with http(sim.url) as c:
        r = c.get("/api/version")
        assert r.json() == {"version": CURRENT_VERSION, "simulator": "chunkwise"}
        for response in (r, c.get("/api/tags"), c.post("/api/chat", json={"model": "nope"}), c.get("/nowhere")):
            assert response.headers["X-Ollama-Simulator"] == "chunkwise"
    sim.configure(ollama_version="0.30.11")
    with http(sim.url) as c:
        assert c.get("/api/version").json()["version"] == "0.30.11"


def test_official_client_chat_generate_show_ps_list(sim_factory):
    sim = sim_factory(prefill_tps=1e6, decode_tps=1e5)
    client = ollama.Client(host=sim.url)

    reply = client.chat(model="llama3.1:8b", messages=MSGS, stream=False)
    assert reply.done is True and reply.done_reason == "stop" and reply.message.role == "assistant"
    assert reply.prompt_eval_count == chat_prompt_tokens(MSGS)
    assert reply.eval_count == count_tokens(reply.message.content) > 0
    assert all(isinstance(reply[k], int) and reply[k] > 0 for k in METRICS)
    assert reply.created_at.endswith("Z")

    parts = list(client.chat(model="llama3.1:8b", messages=MSGS, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content for p in parts) == reply.message.content
    assert parts[-1].eval_count == reply.eval_count == len(parts) - 1  # one line per token, as Ollama

    gen = client.generate(model="qwen2.5:7b", prompt="Why is the sky blue?", system="Be brief.", stream=False)
    assert gen.done and gen.prompt_eval_count == chat_prompt_tokens(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
        template=CHATML)
    assert len(gen.context) == gen.prompt_eval_count + gen.eval_count
    streamed = list(client.generate(model="qwen2.5:7b", prompt="Why is the sky blue?", system="Be brief.", stream=True))
    assert "".join(p.response for p in streamed) == gen.response and streamed[-1].done

    show = client.show("gemma2:9b")
    assert show.details.format == "gguf" and show.details.family == "gemma2"
    assert show.modelinfo["gemma2.attention.key_length"] == 256
    assert show.capabilities == ["completion"]

    models = client.ps().models
    assert [m.model for m in models] == ["qwen2.5:7b"]
    assert models[0].context_length == 4096 and models[0].size_vram == models[0].size

    listed = {m.model: m for m in client.list().models}
    assert set(listed) == set(PROFILES)
    assert listed["llama3.1:8b"].size == PROFILES["llama3.1:8b"].weights_bytes
    assert listed["llama3.1:8b"].digest == PROFILES["llama3.1:8b"].digest

    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="mistral:7b", messages=MSGS)
    assert err.value.status_code == 404 and err.value.error == "model 'mistral:7b' not found"


@pytest.mark.parametrize(
    "name,arch,layers,heads,kv_heads,embedding,ctx,kv_bytes",
    [
        ("llama3.1:8b", "llama", 32, 32, 8, 4096, 131072, 131072),
        ("llama3.2:3b", "llama", 28, 24, 8, 3072, 131072, 114688),
        ("qwen2.5:7b", "qwen2", 28, 28, 4, 3584, 32768, 57344),
        ("gemma2:9b", "gemma2", 42, 16, 8, 3584, 8192, 344064),
    ],
)
def test_show_model_info_has_real_architecture(sim, name, arch, layers, heads, kv_heads, embedding, ctx, kv_bytes):
    with http(sim.url) as c:
        body = c.post("/api/show", json={"model": name}).json()
    info = body["model_info"]
    assert info["general.architecture"] == arch
    assert (info[f"{arch}.block_count"], info[f"{arch}.attention.head_count"]) == (layers, heads)
    assert (info[f"{arch}.attention.head_count_kv"], info[f"{arch}.embedding_length"]) == (kv_heads, embedding)
    assert info[f"{arch}.context_length"] == ctx
    assert (f"{arch}.attention.key_length" in info) == (name == "gemma2:9b")
    assert kv_bytes_per_token(info) == kv_bytes
    assert body["details"]["format"] == "gguf" and body["details"]["quantization_level"]
    assert PROFILES[name].weights_bytes > 1_000_000_000


def test_show_without_verbose_sends_the_gguf_arrays_as_null(sim):
    """ollama v0.33.0-rc2 `server/routes.go:1600-1618` + `fs/ggml/gguf.go:457-483`: without `verbose`
    no array value is collected and each non-empty GGUF array marshals as null; with `verbose: true`
    every array is complete (here the vocabulary, vocab_size entries). Scalars are the same either way."""
    with http(sim.url) as c:
        plain = c.post("/api/show", json={"model": "llama3.1:8b"}).json()["model_info"]
        false = c.post("/api/show", json={"model": "llama3.1:8b", "verbose": False}).json()["model_info"]
        full = c.post("/api/show", json={"model": "llama3.1:8b", "verbose": True}).json()["model_info"]
        bad = c.post("/api/show", json={"model": "llama3.1:8b", "verbose": "yes"})
    arrays = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"}
    assert plain == false
    assert {k for k, v in plain.items() if v is None} == arrays
    assert not any(isinstance(v, list) for v in plain.values())
    assert all(len(full[k]) == full["llama.vocab_size"] == 128256 for k in arrays)
    assert {k: v for k, v in full.items() if k not in arrays} == {k: v for k, v in plain.items() if k not in arrays}
    assert bad.status_code == 400 and "verbose of type bool" in bad.json()["error"]


def test_model_names_and_aliases():
    assert resolve("llama3.1:8b") is PROFILES["llama3.1:8b"]
    assert resolve("llama3.1") is resolve("llama3.1:latest") is PROFILES["llama3.1:8b"]
    assert all(resolve(alias) is PROFILES[target] for alias, target in ALIASES.items())
    assert resolve("llama3.1:70b") is None and resolve("mistral") is None and resolve("") is None


def test_bad_requests_get_ollama_statuses(sim):
    with http(sim.url) as c:
        def err(path, status, **kwargs):
            r = c.post(path, **kwargs)
            assert r.status_code == status, r.text
            return r.json()["error"]

        # encoding/json's texts through gin's ShouldBindJSON (v0.24.0:server/routes.go:2181-2187)
        assert err("/api/chat", 400, content=b"{not json") == (
            "invalid character 'n' looking for beginning of object key string")
        assert err("/api/chat", 400, content=b'{"model":') == "unexpected EOF"
        assert err("/api/chat", 400, content=b"") == "missing request body"
        assert err("/api/chat", 400, json={"model": "x", "messages": "hi"}) == (
            "json: cannot unmarshal string into Go struct field ChatRequest.messages of type []api.Message")
        assert err("/api/chat", 400, json={"model": "x", "messages": [{"role": "user", "content": 5}]}) == (
            "json: cannot unmarshal number into Go struct field Message.messages.content of type string")
        assert err("/api/chat", 400, json={"messages": MSGS}) == "model is required"
        assert err("/api/generate", 400, json={"prompt": "x"}) == "model is required"
        assert err("/api/chat", 404, json={"model": "nope:1b", "messages": MSGS}) == "model 'nope:1b' not found"
        assert err("/api/show", 404, json={"model": "nope:1b"}) == "model 'nope:1b' not found"
        assert err("/api/chat", 400, json={"model": "llama3.1:8b", "messages": MSGS, "keep_alive": "3600"}) == (
            'time: missing unit in duration "3600"')
        assert err("/api/chat", 400, json={"model": "llama3.1:8b", "messages": MSGS, "think": True}) == (
            '"llama3.1:8b" does not support thinking')
        # a wrong option type fails in scheduleRunner: handleScheduleError's default, 500 (api/types.go FromMap)
        bad = {"model": "llama3.1:8b", "messages": MSGS, "options": {"num_ctx": "big"}}
        assert err("/api/chat", 500, json=bad) == 'option "num_ctx" must be of type integer'
        # a format that is neither "json" nor a schema fails when the runner starts (llm/server.go:1583-1594)
        assert err("/api/chat", 500, json={"model": "llama3.1:8b", "messages": MSGS, "format": "xml"}) == (
            'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object')
    stats = sim.stats()
    assert stats["requests"]["/api/chat"]["400"] == 8 and stats["requests"]["/api/chat"]["404"] == 1
    assert stats["requests"]["/api/chat"]["500"] == 2


def test_empty_prompt_loads_and_keep_alive_zero_unloads(sim):
    with http(sim.url) as c:
        r = c.post("/api/chat", json={"model": "llama3.1:8b", "messages": []}).json()
        assert r["done"] is True and r["done_reason"] == "load" and r["message"] == {"role": "assistant", "content": ""}
        assert [m["model"] for m in c.get("/api/ps").json()["models"]] == ["llama3.1:8b"]
        r = c.post("/api/generate", json={"model": "llama3.1:8b", "keep_alive": 0}).json()
        assert r["done_reason"] == "unload" and r["response"] == ""
        assert c.get("/api/ps").json()["models"] == []


def test_zero_durations_are_omitted_like_go_omitempty(sim):
    """With infinite rates the modelled prefill/decode times are 0 and Ollama's omitempty drops them."""
    with http(sim.url) as c:
        body = c.post("/api/chat", json={"model": "llama3.1:8b", "messages": MSGS, "stream": False}).json()
    assert "prompt_eval_duration" not in body and "eval_duration" not in body
    assert body["prompt_eval_count"] > 0 and body["eval_count"] > 0 and body["total_duration"] > 0


def test_ps_expiry_is_a_utc_timestamp(sim):
    with http(sim.url) as c:
        c.post("/api/chat", json={"model": "llama3.1:8b", "messages": MSGS, "stream": False, "keep_alive": "10m"})
        expires = datetime.fromisoformat(c.get("/api/ps").json()["models"][0]["expires_at"].replace("Z", "+00:00"))
    left = (expires - datetime.now(UTC)).total_seconds()
    assert 500 < left <= 600


def test_model_build_changes_the_digest_in_tags_and_ps(sim):
    with http(sim.url) as c:
        usual = {m["name"]: m["digest"] for m in c.get("/api/tags").json()["models"]}
    sim.configure(model_build="q4-rebuild")
    with http(sim.url) as c:
        other = {m["name"]: m["digest"] for m in c.get("/api/tags").json()["models"]}
        c.post("/api/chat", json={"model": "llama3.1:8b", "messages": MSGS, "stream": False})
        ps = c.get("/api/ps").json()["models"][0]
    assert set(other) == set(usual) and all(other[n] != usual[n] and len(other[n]) == 64 for n in usual)
    assert ps["digest"] == other["llama3.1:8b"]
    sim.configure(model_build="")
    with http(sim.url) as c:
        assert {m["name"]: m["digest"] for m in c.get("/api/tags").json()["models"]} == usual
