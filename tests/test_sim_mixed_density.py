"""Rows of mixed density through `chunkwise run` against the simulator (issue 18 item 5, issue 19 item 2).

The simulator counts tokens by character class (Gemma 3's densities, sim/tokenizer.py): English prose
costs about 6 characters per token, CSV records about 1.3. No single characters-per-token ratio fits
both, the client's calibrated one included. Every row here fits its context by far, and the simulator,
like every Ollama since 0.12.6, refuses an over-long prompt under `truncate: false` instead of cutting
it: a `context_truncated` row is therefore always a false flag.

The input is the sample's own kinds of text in a fixed order (40 record rows calibrate the client, then
one prose row), sent one at a time, so the outcome does not depend on the order answers come back in.
The same false flags show in `chunkwise demo` (17 of its 5,000 rows on 2026-12-07), where they vary
with that order.
"""

from __future__ import annotations

import random

import polars as pl
import pytest

from chunkwise.cli import main as cli_main
from chunkwise.inputs.sample_text import row_body
from tests.support.run_checks import assert_answered_once

pytestmark = pytest.mark.usefixtures("prefect_harness", "clean_process")

RECORDS = 40


def test_mixed_density_rows_that_fit_are_never_flagged(sim_factory, tmp_path, capsys):
    rng = random.Random(3)
    prompts = [row_body("records", rng, 1500) for _ in range(RECORDS)] + [row_body("prose", rng, 3000)]
    source = tmp_path / "mixed.parquet"
    pl.DataFrame({"id": [f"r{i}" for i in range(len(prompts))], "prompt": prompts}).write_parquet(source)
    sim = sim_factory()
    code = cli_main(["run", "--input", str(source), "--host", sim.url, "--output-dir", str(tmp_path / "runs"),
                     "--run-name", "t", "--mode", "independent", "--num-ctx", "8192", "--parallel", "1",
                     "--chunk-size", "64", "--num-predict", "32"])
    out = capsys.readouterr()
    table = pl.read_parquet(tmp_path / "runs" / "t" / "results.parquet")
    assert_answered_once(sim.stats(), expected=len(prompts))  # every row answered exactly once: nothing was cut
    flagged = table.filter(pl.col("error_class") == "context_truncated")
    assert flagged.height == 0, (flagged.select("id", "error_message").rows(), out.err[-2000:])
    # the only other failures a healthy server gives here: answers cut at num_predict (exit 1 then)
    assert set(table.filter(pl.col("status") != "ok")["error_class"].to_list()) <= {"output_truncated"}
    assert code in (0, 1)
