"""The synthetic request set (chunkwise.inputs.sample, `chunkwise sample`)."""

from __future__ import annotations

import ast
import inspect
import re

import pyarrow.parquet as pq
import pytest

from chunkwise.cli import main
from chunkwise.harness.sim.tokenizer import count_tokens
from chunkwise.inputs import sample, sample_text
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


def test_rows_are_of_mixed_density(tmp_path):
    """Prose, code, CSV records, Chinese and mixed rows, so that no single characters-per-token ratio fits
    every row: counted by the simulator's tokenizer (Gemma 3's densities) prose rows come out above 4.5
    characters per token and records below 2, and the whole set is far from the client's 4.0."""
    path = tmp_path / "s.parquet"
    sample.write_sample(path, 2000, seed=1)
    prompts = pq.read_table(path)["prompt"].to_pylist()
    cjk = [p for p in prompts if re.search("[\u4e00-\u9fff]", p)]
    records = [p for p in prompts if re.search(r"\d{4}-\d\d-\d\d,INV-", p)]
    code = [p for p in prompts if re.search(r"def |SELECT |for \w+ in range", p)]
    assert 0.06 < len(cjk) / len(prompts) < 0.14  # 10 % of the rows up to DENSE_MAX_CHARS, and none above
    assert 0.15 < len(records) / len(prompts) < 0.30  # records, and half of the mixed rows
    assert 0.15 < len(code) / len(prompts) < 0.30
    assert all(len(p) <= sample_text.DENSE_MAX_CHARS for p in cjk + records + code)
    ratio = {p: len(p) / count_tokens(p) for p in prompts}
    prose = [p for p in prompts if p not in set(cjk + records + code) and len(p) > 1000]  # past the id head
    pure_records = [p for p in records if re.match(r"Request req-\d+, \w+, priority \d\. \d{4}-", p)]
    assert min(ratio[p] for p in prose) > 4.5 and max(ratio[p] for p in pure_records) < 2.0
    overall = sum(map(len, prompts)) / sum(map(count_tokens, prompts))
    assert not 3.5 < overall < 4.5


def test_the_sample_does_not_use_the_simulator():
    """The sample data is the client's input: tuned to nothing the simulator counts (issue 18 item 5)."""
    for module in (sample, sample_text):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(name and name.startswith("chunkwise.harness") for name in imported), module


def test_system_prompt():
    """`tokens` tokens as chunkwise estimates them (4 characters each), the same every time."""
    text = sample.sample_system_prompt()
    assert len(text) == 9600 and estimate_tokens(len(text)) == 2400
    assert text.startswith(sample.SYSTEM_PROMPT_HEAD)
    assert sample.sample_system_prompt() == text
    assert estimate_tokens(len(sample.sample_system_prompt(10))) == 10
    assert count_tokens(text) < 2000  # a real tokenizer (Gemma's densities) needs far fewer for English


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
    assert len(system.read_text(encoding="utf-8")) == 400  # 100 tokens at the client's 4 characters each
    assert capsys.readouterr().out.startswith(f"wrote 50 rows to {out} (")
    assert main(["sample", "--rows", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "chunkwise sample: --rows 0 is out of range; give 1 to 10000000"
    assert main(["sample", "--rows", "5", "--out", str(tmp_path)]) == 2
