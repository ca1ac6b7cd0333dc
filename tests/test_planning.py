"""Chunk sizing, chunk specs, the run plan and `chunkwise plan` (chunkwise.plan.chunks, commands/plan)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from itertools import pairwise

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from chunkwise.backend import ModelFacts
from chunkwise.cli import main
from chunkwise.inputs.scan import validate_only
from chunkwise.params import RunParams
from chunkwise.plan import chunks as planning
from chunkwise.plan import probe
from chunkwise.plan.chunks import ChunkSpec, chunk_count, chunk_size_rule, plan_chunks
from chunkwise.plan.report import build_plan
from tests.support.backends import stand_in

# llama3.1:8b (32 layers, 8 KV heads, head size 128; meta-llama/llama-models `sku_list.py`):
# 0.125 MiB of f16 KV per token.
LLAMA31_8B = {
    "general.architecture": "llama", "llama.block_count": 32, "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8, "llama.embedding_length": 4096, "llama.context_length": 131072,
}


def test_chunk_size_rule_reference():
    assert chunk_size_rule(128_000, 2_400, 903) == 111
    assert chunk_size_rule(128_000, 2_400, 903, fill=0.5) == 69
    assert chunk_size_rule(1_000, 0, 5_000) == 1  # never zero


def test_chunk_size_rule_system_prompt_leaves_no_room():
    with pytest.raises(ValueError, match=r"^the system prompt \(4000 tokens\) leaves no room in the chunk budget "
                                         r"of 4000 tokens; shorten the system prompt or raise num_ctx"):
        chunk_size_rule(4_000, 4_000, 100)


@pytest.mark.parametrize(("n", "size", "count"), [(5_000, 111, 45), (170_000, 111, 1_532), (160, 111, 2),
                                                   (1, 111, 1), (0, 111, 0), (111, 111, 1), (113, 111, 1),
                                                   (114, 111, 2), (166, 111, 2), (167, 111, 2), (10, 1, 10)])
def test_chunk_count(n, size, count):
    assert chunk_count(n, size) == count


@pytest.mark.parametrize(("n", "size"), [(5_000, 111), (170_000, 111), (160, 111), (999, 7), (3, 2)])
def test_plan_chunks_even_and_contiguous(n, size):
    chunks = plan_chunks(n, size)
    sizes = [c.size for c in chunks]
    assert chunks[0].start == 0 and chunks[-1].stop == n
    assert all(a.stop == b.start for a, b in pairwise(chunks))
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) <= int(size * 1.02)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunk_labels_use_input_rows():
    assert plan_chunks(170_000, 111)[42].label == "chunk-0042 [4660-4770]"
    rows = pa.array([0, 2, 3, 7, 8, 9, 12], pa.int64())  # rows 1, 4-6, 10, 11 were rejected
    chunks = plan_chunks(7, 3, rows=rows)
    assert [c.label for c in chunks] == ["chunk-0000 [0-2]", "chunk-0001 [3-7]", "chunk-0002 [8-12]"]
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 4), (4, 7)]
    with pytest.raises(ValueError, match="rows has 7 entries for 8 requests"):
        plan_chunks(8, 3, rows=rows)


def test_chunk_spec_is_small_frozen_and_json():
    spec = plan_chunks(5_000, 111)[1]
    assert json.loads(spec.model_dump_json()) == {"index": 1, "start": 111, "stop": 222, "first_row": 111,
                                                  "last_row": 221}
    assert ChunkSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValidationError, match="frozen"):
        spec.start = 3  # type: ignore[misc]


# --- build_plan ------------------------------------------------------------------------------


@pytest.fixture()
def summary(tmp_path):
    """Ten requests of 400 characters (100 tokens), one of 20,000 (5,000 tokens), one null prompt."""
    prompts = ["a" * 400] * 10 + ["b" * 20_000, None]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(12)], "prompt": prompts}), path)
    return validate_only(path, num_ctx=8192, num_predict=512)


def params(**kw):
    """The chunk figures below are worked out for conversation mode (the budget is num_ctx) and one slot."""
    return RunParams(input_path="in.parquet", **{"mode": "conversation", "parallel": 1, **kw})


def test_build_plan_conversation(summary):
    p = build_plan(summary, params(num_ctx=8192, expected_answer_tokens=100), system_prompt="s" * 4000,
                   model_info=LLAMA31_8B, model_info_source="test", free_vram_mib=20_000.0, gpu_reason=None,
                   weights_mib=4_700.0, prefill_tps=1000.0, decode_tps=50.0)
    assert (p.rows, p.accepted, p.rejected) == (12, 11, 1)
    assert p.system_prompt_tokens == 1000
    assert p.mean_request_tokens == pytest.approx((10 * 100 + 5000) / 11 + 100, abs=0.05)
    # floor(0.8 x (8192 - 1000) / 645.45) = 8 requests per chunk; 11 requests -> round(1.375) = 1, raised to 2.
    assert (p.chunk_size, p.chunk_size_computed, p.chunk_count, p.chunk_sizes) == (8, True, 2, (5, 6))
    assert (p.prompt_tokens.min, p.prompt_tokens.p50, p.prompt_tokens.max) == (100, 100, 5000)
    assert p.kv_mib_per_token == 0.125 and p.kv_reserved_mib == 1024.0
    assert p.fits is True and p.training_context == 131072
    assert not any("clamps" in a for a in p.advice)
    clamped = build_plan(summary, params(num_ctx=200_000), system_prompt="", model_info=LLAMA31_8B,
                         model_info_source="test", free_vram_mib=None, gpu_reason="none")
    assert clamped.advice[0] == ("Ollama clamps num_ctx to the model's training context 131072: set --num-ctx "
                                 "131072 or less (this plan assumes 200000)")
    # The 5,000-token request + 1,000 system + 512 num_predict fits 8192; independent num_ctx:
    # ceil(6000 x 1.15) + 512 = 7412 -> 8192.
    assert (p.too_long_count, p.largest_request_tokens, p.independent_num_ctx) == (0, 6000, 8192)
    assert p.compute_buffer_mib == 768.0  # Ollama's num_batch 1024 for an effective context of 8192
    assert p.slots_at_num_ctx == p.independent_slots == 14  # floor((20000 - 4700 - 768) / 1024)
    prefill = 2 * 1000 + 6000
    avg_ctx = 1000 + 6 * p.mean_request_tokens / 2
    assert p.eta_s == pytest.approx(prefill / 1000 + 1100 * (1 + avg_ctx / 131072) / 50, rel=1e-3)
    assert json.loads(json.dumps(p.as_dict()))["first_rejects"][0]["id"] == "r11"
    text = p.render()
    assert "2 chunks of 5-6 requests; chunk size 8 (computed" in text
    assert "sizes them from the server's count of a sample of the rows" in text  # chunkwise.run.density
    assert ("fits vram    yes: KV 1,024 MiB + weights 4,700 MiB + compute buffers 768 MiB (num_batch 1024) = "
            "6,492 MiB vs 20,000 MiB free") in text


def test_build_plan_flags_requests_too_long_for_context(summary):
    p = build_plan(summary, params(num_ctx=6000, chunk_size=4), system_prompt="s" * 4000, model_info=None,
                   model_info_source="unknown (server unreachable)", free_vram_mib=None, gpu_reason="no NVML")
    assert (p.chunk_size, p.chunk_size_computed, p.chunk_count) == (4, False, 3)
    assert (p.too_long_count, p.too_long_ids) == (1, ("r10",))  # 1000 + 5000 + 512 > 6000
    assert p.kv_mib_per_token is None and p.kv_reason == "unknown (server unreachable)"
    assert (p.fits, p.fit_detail) == (None, "unknown: no NVML")
    assert p.eta_s is None
    assert p.advice[0].startswith("1 requests exceed num_ctx 6000 with the system prompt and num_predict")


def test_build_plan_independent_uses_chunk_token_budget(summary):
    p = build_plan(summary, params(mode="independent", num_ctx=8192, chunk_token_budget=20_000, parallel=4),
                   system_prompt="", model_info=LLAMA31_8B, model_info_source="test", free_vram_mib=6_000.0,
                   gpu_reason=None, kv_cache_type="q8_0")
    assert (p.budget_tokens, p.budget_source) == (20_000, "chunk_token_budget")
    assert p.chunk_size == chunk_size_rule(20_000, 0, (10 * 100 + 5000) / 11 + 200)
    assert p.conversation_peak_tokens is None
    assert p.kv_mib_per_token == pytest.approx(0.125 * 34 / 64)
    assert p.kv_reserved_mib == pytest.approx(2176.0)  # 0.0664 MiB x 8192 x 4
    assert p.fits is True and "weights unknown (not counted)" in p.fit_detail
    # The largest request: ceil(5000 x 1.15) + 512 = 6262 -> 7168; 8192 x 4 slots = 32768 effective
    # context -> num_batch 1024 and 768 MiB of compute buffers; floor((6000 - 768) / (0.0664 x 7168)) = 10.
    assert (p.independent_num_ctx, p.independent_slots, p.slots_at_num_ctx) == (7168, 10, 9)
    assert p.advice[-1].endswith("476 MiB of KV per slot; 10 parallel slot(s) of it fit the free VRAM: set "
                                 "OLLAMA_NUM_PARALLEL and --parallel to 10")
    tight = build_plan(summary, params(mode="independent", num_ctx=8192, parallel=4), system_prompt="",
                       model_info=LLAMA31_8B, model_info_source="test", free_vram_mib=6_000.0, gpu_reason=None,
                       weights_mib=4_000.0)
    assert tight.fits is False and any("does not fit the free VRAM" in a for a in tight.advice)


@pytest.mark.parametrize(("num_ctx", "parallel", "training", "batch", "mib"), [
    # server/sched.go generationBatchForContext / generationBatchSurcharge (ollama v0.33.0-rc2)
    (4096, 1, None, 512, 0.0), (4097, 1, None, 1024, 768.0), (8192, 4, None, 1024, 768.0),
    (32768, 1, None, 1024, 768.0), (32769, 1, None, 2048, 2048.0), (16384, 4, None, 2048, 2048.0),
    (200_000, 1, 4096, 512, 0.0),  # num_ctx is clamped to the training context first
])
def test_ollamas_automatic_num_batch_and_its_compute_buffers(num_ctx, parallel, training, batch, mib):
    from chunkwise.ollama import compute

    assert compute.automatic_batch(num_ctx, parallel, training) == batch
    assert compute.compute_buffer_mib(num_ctx, parallel, training) == mib


def test_compute_buffers_can_make_a_plan_not_fit(summary):
    # KV 0.125 MiB x 32768 = 4096 MiB + weights 4700 = 8796 MiB fits 9,500 MiB; + 768 MiB of buffers does not
    p = build_plan(summary, params(num_ctx=32768), system_prompt="", model_info=LLAMA31_8B, model_info_source="test",
                   free_vram_mib=9_500.0, gpu_reason=None, weights_mib=4_700.0)
    assert p.fits is False and "compute buffers 768 MiB" in p.fit_detail


def test_chunk_size_for_counts_own_system_prompts(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": [1, 2], "prompt": ["p" * 400, "q" * 400], "system": [None, "s" * 800]}), path)
    summary = validate_only(path, num_ctx=8192, num_predict=512)
    assert planning.mean_request_tokens(summary, 100, 4.0) == (400 + 1200) / 2 / 4 + 100  # 300
    # floor(0.8 x (8192 - 1000) / 300) = 19; the same from chunk_size_for and build_plan
    assert planning.chunk_size_for(summary, params(num_ctx=8192, expected_answer_tokens=100),
                                   system_prompt="x" * 4000) == (19, True)
    assert planning.chunk_size_for(summary, params(chunk_size=7), system_prompt="") == (7, False)
    p = build_plan(summary, params(num_ctx=8192, expected_answer_tokens=100), system_prompt="x" * 4000,
                   model_info=None, model_info_source="unknown", free_vram_mib=None, gpu_reason=None)
    assert (p.chunk_size, p.mean_request_tokens, p.chars_per_token) == (19, 300.0, 4.0)


def test_build_plan_rejects_bad_chars_per_token(summary):
    with pytest.raises(ValueError, match="chars_per_token must be positive"):
        build_plan(summary, params(), system_prompt="", model_info=None, model_info_source="unknown",
                   free_vram_mib=None, gpu_reason=None, chars_per_token=0)


# --- the command -------------------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(probe, "free_vram", lambda: (None, "test: no GPU"))


def test_plan_command_json_without_a_server_plans_without_kv_figures(tmp_path, summary, capsys, no_gpu):
    system = tmp_path / "system.txt"
    system.write_text("s" * 4000, encoding="utf-8")
    code = main(["plan", "--input", summary.path, "--json", "--host", closed_port_url(), "--num-ctx", "8192",
                 "--system-prompt-file", str(system), "--expected-answer-tokens", "100", "--mode", "conversation",
                 "--parallel", "1"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["accepted"], out["rejected"], out["chunk_size"], out["chunk_count"]) == (11, 1, 8, 2)
    assert out["model_info_source"] == "unknown (server unreachable; start it or pass --host)"
    assert out["kv_mib_per_token"] is None
    assert out["fit_detail"] == "unknown: test: no GPU"


def test_plan_command_uses_server_show(summary, capsys, no_gpu, monkeypatch):
    stand_in(monkeypatch, probe=lambda host, model, settings: ModelFacts(LLAMA31_8B, f"server {host}"))
    assert main(["plan", "--input", summary.path, "--host", "http://gpu-box:11434", "--num-ctx", "8192"]) == 0
    text = capsys.readouterr().out
    # a server that does not say its version is taken as current Ollama: llama-server's layout
    assert ("kv cache     0.1250 MiB/token (f16, model_info from server http://gpu-box:11434, llama-server layout)"
            in text)


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-ctx", "100"], "chunkwise plan: --num-ctx 100: must be greater than or equal to 256"),
    (["--chars-per-token", "0"], "chunkwise plan: --chars-per-token 0.0: must be greater than 1"),
    (["--system-prompt-file", "/nonexistent/s.txt"], None),
    (["--host", "file:///etc/passwd"], "chunkwise plan: --host: Ollama host 'file:///etc/passwd' uses scheme "
                                       "'file'; only http and https are allowed"),
])
def test_plan_command_bad_flags(summary, capsys, no_gpu, argv, message):
    assert main(["plan", "--input", summary.path, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    if message:
        assert err == message
    else:
        assert err == ("chunkwise plan: system prompt file /nonexistent/s.txt does not exist; check "
                       "--system-prompt-file")


def test_plan_command_input_error(tmp_path, capsys, no_gpu):
    missing = tmp_path / "none.parquet"
    assert main(["plan", "--input", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"chunkwise plan: {missing}: no such file; check the input path"


def test_command_modules_import_nothing_heavy():
    code = ("import sys, chunkwise.commands.plan, chunkwise.commands.sample; "
            "print(sorted(m for m in ('prefect', 'httpx', 'pyarrow', 'polars') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_conversation_chunk_count_is_a_multiple_of_parallel():
    from chunkwise.plan.chunks import chunk_count

    assert chunk_count(5_000, 111) == 45
    assert chunk_count(5_000, 111, multiple_of=4) == 48  # 12 full rounds of 4 conversations
    assert chunk_count(5_000, 111, multiple_of=5) == 45
    assert chunk_count(3, 111, multiple_of=4) == 3  # never more chunks than requests
    sizes = [s.size for s in plan_chunks(5_000, 111, multiple_of=4)]
    assert max(sizes) <= 111 and sum(sizes) == 5_000


def test_conversation_mode_ends_with_a_taper_of_halving_chunks_parallel_of_each():
    """The last chunks halve down to one row, `parallel` of each size, so the conversations still running at
    the end finish within about one answer of each other (chunkwise.plan.chunks' docstring)."""
    from chunkwise.plan.chunks import chunk_bounds, tail_sizes

    assert tail_sizes(6_000, 5, 256) == [2] * 256 + [1] * 256
    assert tail_sizes(5_000, 111, 4) == [s for s in (55, 27, 13, 6, 3, 1) for _ in range(4)]
    specs = plan_chunks(6_000, 5, multiple_of=256, taper=True)
    sizes = [s.size for s in specs]
    assert sizes[-512:] == [2] * 256 + [1] * 256 and sum(sizes) == 6_000
    assert all(a.stop == b.start for a, b in pairwise(specs)) and specs[-1].stop == 6_000
    head = sizes[:-512]
    assert len(head) % 256 == 0 and max(head) - min(head) <= 1 and max(head) <= 5  # the rounds before: even
    untapered = plan_chunks(6_000, 5, multiple_of=256)
    assert chunk_bounds(6_000, 5, 256, taper=False) == [s.start for s in untapered] + [6_000]
    # no taper with one conversation at a time, one-row chunks, or a run without a whole round before its tail
    assert tail_sizes(6_000, 5, 1) == [] and tail_sizes(6_000, 1, 256) == []
    assert tail_sizes(767 + 1_280 - 1, 5, 256) == [] and tail_sizes(768 + 1_280, 5, 256) != []
    assert [s.size for s in plan_chunks(1_000, 5, multiple_of=256, taper=True)] == \
        [s.size for s in plan_chunks(1_000, 5, multiple_of=256)]


def test_a_conversation_plan_shows_the_taper_in_its_chunk_sizes(tmp_path):
    """`chunkwise plan` counts the chunks as a new run cuts them: its smallest chunk is the taper's one row."""
    path = tmp_path / "many.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(4_000)], "prompt": ["a" * 400] * 4_000}), path)
    many = validate_only(path, num_ctx=2048, num_predict=128)
    p = build_plan(many, params(num_ctx=2048, expected_answer_tokens=100, parallel=4), system_prompt="",
                   model_info=LLAMA31_8B, model_info_source="test", free_vram_mib=None, gpu_reason="none")
    # floor(0.8 x 2048 / 200) = 8 a chunk: 4 x (4 + 2 + 1) = 28 rows in the tail, 3,972 in 500 chunks of 7-8
    assert (p.chunk_size, p.chunk_count, p.chunk_sizes) == (8, 500 + 12, (1, 8))
