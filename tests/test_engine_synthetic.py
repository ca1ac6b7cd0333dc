"""The synthetic GGUF of chunkwise.harness.llama_server.synthetic (what the GPU measurement loads where the Gemma
file cannot travel): its metadata gives the KV formula it was built for, and llama-server loads it
and answers."""

from __future__ import annotations

import pytest

from chunkwise.harness.llama_server.http import post_json
from chunkwise.harness.llama_server.server import running_engine
from chunkwise.harness.llama_server.synthetic import write_synthetic_gguf
from chunkwise.ollama.kv import kv_layout, kv_reserved_bytes
from chunkwise.openai.gguf import read_metadata

SMALL = {"layers": 4, "embd": 256, "heads": 4, "kv_heads": 2, "head_dim": 64, "ff": 256, "context": 4096}


def test_metadata_gives_the_kv_formula_it_was_built_for(tmp_path):
    path = write_synthetic_gguf(tmp_path / "s.gguf", **SMALL)
    info = read_metadata(path)
    assert info["general.architecture"] == "llama" and info["llama.block_count"] == 4
    assert len(info["tokenizer.ggml.tokens"]) == 0  # string arrays are skipped by the reader
    layout = kv_layout(info, engine="llama-server")
    assert (layout.global_layers, layout.swa_layers) == (4, 0)
    assert layout.global_bytes_per_token == 4 * 2 * (64 + 64) * 2  # 2 KiB per token
    assert kv_reserved_bytes(info, 1024, 2, engine="llama-server") == 2048 * 1024 * 2


@pytest.mark.slow
@pytest.mark.engine
def test_llama_server_loads_it_and_answers(tmp_path):
    model = write_synthetic_gguf(tmp_path / "s.gguf", **SMALL)
    with running_engine(1, 1024, model=model, log_path=tmp_path / "server.log") as engine:
        status, body = post_json(engine.url + "/v1/chat/completions",
                                 {"model": "x", "messages": [{"role": "user", "content": "hello there"}],
                                  "max_tokens": 4, "temperature": 0}, timeout_s=120)
        rss = engine.rss_mib()
    assert status == 200, body
    assert body["usage"]["prompt_tokens"] > 11  # byte-level vocabulary: one token per byte, plus template
    assert 1 <= body["usage"]["completion_tokens"] <= 4
    assert rss > 0
