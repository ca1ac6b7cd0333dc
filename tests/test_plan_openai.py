"""`chunkwise plan --api openai` against a loopback server answering llama-server's recorded `/props`
and `/v1/models` (tests/support/llama_server_props.json), its `model_path` pointing at a GGUF header
with Gemma 3 270M's metadata: the KV figures follow llama-server's sliding-window layout, the
server's slots are compared with the run's, and servers without `/props` give a reason, not a
number. The same command against the real engine is in tests/test_real_engine.py."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.pipeline_helpers import write_requests

REPO = Path(__file__).resolve().parents[1]
RECORDED = json.loads((REPO / "tests" / "support" / "llama_server_props.json").read_text())
#: Gemma 3 270M's header (read from gemma-3-270m-q4_k_m.gguf): 18 layers, 1 KV head of 256, window 512.
GEMMA3 = [("general.architecture", "gemma3"), ("gemma3.context_length", 32768), ("gemma3.block_count", 18),
          ("gemma3.embedding_length", 640), ("gemma3.attention.head_count", 4),
          ("gemma3.attention.head_count_kv", 1), ("gemma3.attention.key_length", 256),
          ("gemma3.attention.value_length", 256), ("gemma3.attention.sliding_window", 512)]


def write_header(path: Path, entries: list[tuple[str, Any]]) -> None:
    """A GGUF v3 header with string and u32 keys and no tensors (all `read_metadata` reads)."""

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    body = b"".join(s(k) + (struct.pack("<I", 8) + s(v) if isinstance(v, str) else struct.pack("<II", 4, v))
                    for k, v in entries)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)) + body)


@contextmanager
def recorded_server(props: dict[str, Any] | None) -> Iterator[str]:
    """A loopback HTTP server answering GET /v1/models as recorded and GET /props with `props`
    (404 when None, as vLLM does)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = RECORDED["models"] if self.path == "/v1/models" else props if self.path == "/props" else None
            data = json.dumps(body).encode() if body is not None else b'{"error": "not found"}'
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def plan(tmp_path: Path, host: str, *flags: str) -> dict[str, Any]:
    source = write_requests(tmp_path / "in.parquet", 20)
    done = subprocess.run([sys.executable, "-m", "chunkwise", "plan", "--input", str(source), "--api", "openai",
                           "--host", host, "--model", "gemma3-270m", "--mode", "independent", "--json", *flags],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_kv_figures_follow_llama_servers_sliding_window_layout(tmp_path):
    gguf = tmp_path / "gemma.gguf"
    write_header(gguf, GEMMA3)
    with recorded_server({**RECORDED["props"], "model_path": str(gguf)}) as host:
        p = plan(tmp_path, host, "--num-ctx", "2048", "--parallel", "2")
    # 3 global layers (every 6th) x 1 KV head x (256 + 256) x 2 bytes = 3 KiB per token, not the 18 KiB
    # of counting all 18 layers; the 15 windowed layers hold pad256(512 + 512) = 1024 cells per slot
    assert p["engine"] == "llama-server" and p["model_info_source"].startswith(f"GGUF header of {gguf}")
    assert p["kv_mib_per_token"] == pytest.approx(3 * 1024 / 2**20)
    assert p["kv_reserved_mib"] == pytest.approx((3 * 1024 * 2048 * 2 + 15 * 1024 * 1024 * 2) / 2**20)
    assert (p["server_slots"], p["server_slot_ctx"]) == (2, 2048)
    assert p["weights_mib"] == pytest.approx(gguf.stat().st_size / 2**20)
    assert p["compute_buffer_mib"] == 0 and p["training_context"] == 32768
    assert not [a for a in p["advice"] if "server" in a]  # the run matches the server's slots


def test_a_run_that_does_not_match_the_servers_slots_is_told_what_to_change(tmp_path):
    gguf = tmp_path / "gemma.gguf"
    write_header(gguf, GEMMA3)
    with recorded_server({**RECORDED["props"], "model_path": str(gguf)}) as host:
        p = plan(tmp_path, host, "--num-ctx", "4096", "--parallel", "4")
    advice = " | ".join(p["advice"])
    assert "slots hold 2048 tokens each" in advice and "--num-ctx 2048" in advice
    assert "the server has 2 slot(s)" in advice and "--parallel 2" in advice


def test_an_unreadable_model_file_or_a_server_without_props_gives_the_reason(tmp_path):
    missing = tmp_path / "elsewhere.gguf"
    with recorded_server({**RECORDED["props"], "model_path": str(missing)}) as host:
        p = plan(tmp_path, host)
    assert p["kv_mib_per_token"] is None and "not readable here" in p["kv_reason"] and str(missing) in p["kv_reason"]
    assert p["server_slots"] == 2  # the slots are still reported
    with recorded_server(None) as host:
        p = plan(tmp_path, host)
    assert p["kv_mib_per_token"] is None and "no llama.cpp /props" in p["kv_reason"]
    with recorded_server(RECORDED["props"]) as host:
        source = write_requests(tmp_path / "in.parquet", 5)
        done = subprocess.run([sys.executable, "-m", "chunkwise", "plan", "--input", str(source), "--api", "openai",
                               "--host", host, "--model", "other", "--json"], capture_output=True, text=True,
                              cwd=REPO, timeout=120)
    assert "model 'other' is not served" in json.loads(done.stdout)["kv_reason"]


def test_plan_with_parallel_auto_sizes_the_kv_cache_for_the_servers_slots(tmp_path):
    gguf = tmp_path / "gemma.gguf"
    write_header(gguf, GEMMA3)
    with recorded_server({**RECORDED["props"], "model_path": str(gguf)}) as host:
        p = plan(tmp_path, host, "--num-ctx", "2048", "--parallel", "auto")
    assert p["parallel"] == 2 == p["server_slots"]  # the recorded llama-server runs -np 2
    assert not [a for a in p["advice"] if "slot(s)" in a]
