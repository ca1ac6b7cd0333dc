"""What a server's version and /api/show mean for the requests (chunkwise.ollama.versions)."""

import pytest

from chunkwise.ollama import versions as v
from chunkwise.ollama.names import model_digest

QWEN3 = {"capabilities": ["completion", "tools", "thinking"], "details": {"family": "qwen3"},
         "template": "{{ .Prompt }}"}
GPT_OSS = {"capabilities": ["completion", "thinking"], "details": {"family": "gptoss"}}
LLAMA = {"capabilities": ["completion", "tools"], "details": {"family": "llama"}}


@pytest.mark.parametrize(("requested", "show", "sent"), [
    (None, QWEN3, False), (None, LLAMA, None), (None, GPT_OSS, "low"), ("off", QWEN3, False), ("off", LLAMA, None),
    ("on", QWEN3, True), ("on", GPT_OSS, "medium"), ("high", GPT_OSS, "high"),
    ("low", {**QWEN3, "template": "{{ if .ThinkLevel }}..."}, "low"),
])
def test_think_sent_per_model(requested, show, sent):
    assert v.resolve_think(requested, v.think_support(show), "m") == sent


@pytest.mark.parametrize(("requested", "show", "hint"), [
    ("on", LLAMA, "cannot think"), ("high", LLAMA, "cannot think"), ("low", QWEN3, "takes no thinking levels"),
    ("off", GPT_OSS, "--think low"), ("on", {}, "none reported"),
])
def test_think_refused_before_anything_is_sent(requested, show, hint):
    with pytest.raises(v.ThinkError, match=hint):
        v.resolve_think(requested, v.think_support(show), "m")


def test_ollama_0_30_0_is_refused_with_the_reason():
    assert "0.30.1" in v.refuse_version("0.30.0")
    assert all(v.refuse_version(x) is None for x in ("0.30.1", "0.0.0", "0.13.0", "0.3.0", "0.30.10", ""))


def test_untagged_names_find_their_digest():
    tags = [{"name": "llama3.1:latest", "model": "llama3.1:latest", "digest": "abc"},
            {"name": "qwen3:8b", "model": "qwen3:8b", "digest": "def"}]
    assert model_digest(tags, "llama3.1") == "abc"
    assert model_digest(tags, "llama3.1:latest") == "abc"
    assert model_digest(tags, "registry.ollama.ai/library/qwen3:8b") == "def"
    assert model_digest(tags, "qwen3") == ""


def test_ollama_before_0_12_6_may_cut_prompts_a_source_build_does_not():
    assert v.cuts_prompts("0.12.5") and v.cuts_prompts("0.11.4")
    assert not any(v.cuts_prompts(x) for x in ("0.12.6", "0.13.0", "0.30.11", "0.0.0"))
