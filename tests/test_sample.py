"""The synthetic request set (chunkwise.inputs.sample, `chunkwise sample`)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from chunkwise.cli import main
from chunkwise.harness.sim.tokenizer import count_tokens
from chunkwise.inputs import sample
from chunkwise.inputs.scan import validate_only
from chunkwise.params import RunParams
from chunkwise.plan.report import build_plan
from chunkwise.tokens import estimate_tokens


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.parquet", "b.parquet", "c.parquet"))
    sample.write_sample(a, 300, seed=7)
    sample.write_sample(b, 300, seed=7)
    sample.write_sample(c, 300, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_schema_ids_and_unique_prompts(tmp_path):
    path = tmp_path / "s.parquet"
    stats = sample.write_sample(path, 1000)
    table = pq.read_table(path)
    assert table.column_names == ["id", "prompt", "category", "priority"]
    ids = table["id"].to_pylist()
    assert ids[:2] == ["req-0000001", "req-0000002"] and ids[-1] == "req-0001000"
    prompts = table["prompt"].to_pylist()
    assert len(set(prompts)) == 1000
    assert prompts[0].startswith("Request req-0000001, ")
    assert set(table["category"].to_pylist()) <= set(sample.CATEGORIES)
    assert set(table["priority"].to_pylist()) <= {1, 2, 3, 4, 5}
    assert stats.mean_prompt_chars == sample.TARGET_MEAN_CHARS


@pytest.mark.parametrize("rows", [1, 2, 7, 1000, 20_000])
def test_prompt_lengths_have_exact_mean_and_a_long_tail(rows):
    lengths = sample.prompt_lengths(rows, seed=3)
    assert len(lengths) == rows
    assert sum(lengths) == rows * sample.TARGET_MEAN_CHARS
    assert min(lengths) >= sample.MIN_CHARS
    if rows >= 20_000:
        assert max(lengths) > 8 * sample.TARGET_MEAN_CHARS  # a few very long prompts
        assert sorted(lengths)[rows // 2] < sample.TARGET_MEAN_CHARS  # skewed: median below mean


def test_text_is_about_four_chars_per_token(tmp_path):
    path = tmp_path / "s.parquet"
    sample.write_sample(path, 400, seed=1)
    prompts = pq.read_table(path)["prompt"].to_pylist()
    chars, tokens = sum(map(len, prompts)), sum(map(count_tokens, prompts))
    assert 3.9 < chars / tokens < 4.1
    assert 650 < tokens / len(prompts) < 760


def test_system_prompt():
    text = sample.sample_system_prompt()
    assert count_tokens(text) == 2400
    assert 2300 <= estimate_tokens(len(text)) <= 2500
    assert sample.sample_system_prompt() == text
    assert count_tokens(sample.sample_system_prompt(10)) == 10


def test_defaults_reproduce_the_reference_plan(tmp_path):
    """2,400-token system prompt, num_ctx 128,000, 200 answer tokens: 111 per chunk, 45 chunks of 5,000."""
    path = tmp_path / "s.parquet"
    sample.write_sample(path, 5000)
    summary = validate_only(path, num_ctx=128_000, num_predict=512)
    assert summary.rejected == 0
    plan = build_plan(summary, RunParams(input_path=str(path)), system_prompt=sample.sample_system_prompt(),
                      model_info=None, model_info_source="unknown", free_vram_mib=None, gpu_reason=None)
    assert (plan.chunk_size, plan.chunk_count) == (111, 45)


def test_sample_command(tmp_path, capsys):
    out = tmp_path / "sub" / "s.parquet"
    system = tmp_path / "system.txt"
    assert main(["sample", "--rows", "50", "--out", str(out), "--seed", "2", "--system-prompt-out", str(system),
                 "--system-tokens", "100"]) == 0
    assert pq.read_metadata(out).num_rows == 50
    assert count_tokens(system.read_text(encoding="utf-8")) == 100
    assert capsys.readouterr().out.startswith(f"wrote 50 rows to {out} (")
    assert main(["sample", "--rows", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "chunkwise sample: --rows 0 is out of range; give 1 to 10000000"
    assert main(["sample", "--rows", "5", "--out", str(tmp_path)]) == 2
