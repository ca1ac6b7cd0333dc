"""`chunkwise run` against the newer real Ollama, v0.33.0 (llama-server engine, `make ollama-next`), on 4
slots through the counting pass-through proxy: a small run in each mode, every id answered exactly once,
Ollama's own counts in the results, failure classes that reconcile with stats.json; a model that cannot load
stops the run through the breaker and a resume finishes it; an over-long prompt is refused by llama-server
and recorded as context_truncated.

Marker `ollama_next`: run by `make test-ollama-next`, not by `make test` (the build costs ~13 minutes more on
the CI machine). The full real-Ollama tier runs against v0.24.0 (tests/test_real_ollama.py); this is the
check that nothing in the client depends on the Go runners that v0.30 replaced. As there, the text is not
asserted, only structure, counts and classes.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from chunkwise.harness.ollama_server.paths import MODEL_NAME, NEXT_VERSION, ollama_paths
from chunkwise.params import RunParams
from tests.support.ollama_breaker import broken_then_repaired
from tests.support.ollama_fixture import OLLAMA_PARALLEL
from tests.support.pipeline_helpers import write_requests
from tests.support.real_engine_proxy import counting_proxy
from tests.support.run_checks import assert_reconciles

pytestmark = [pytest.mark.ollama_next, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness"),
              pytest.mark.timeout(1200)]

#: A few dozen rows: three chunks of 12 in each mode (conversation: three chats of 12 turns).
N = 36
NUM_CTX = 2048
ANSWER_TOKENS = 4


@pytest.fixture(scope="module")
def proxy(ollama_next):
    with counting_proxy(ollama_next.url) as running:
        yield running


@pytest.mark.parametrize("mode", ["independent", "conversation"])
def test_a_small_run_answers_every_id_once_with_classes_that_reconcile(proxy, tmp_path, clean_process, mode):
    from chunkwise.commands.runner import execute

    source = write_requests(tmp_path / "in.parquet", N, prompt_words=8)
    changes = dict(trim_threshold=0.2) if mode == "conversation" else {}
    p = RunParams(input_path=str(source), host=proxy.url, model=MODEL_NAME, output_dir=str(tmp_path / "runs"),
                  run_name="next", num_ctx=NUM_CTX, num_predict=ANSWER_TOKENS, expected_answer_tokens=ANSWER_TOKENS,
                  parallel=OLLAMA_PARALLEL, system_prompt="Answer briefly.", mode=mode, chunk_size=12, **changes)
    proxy.reset()
    code, stats = execute(p, say=lambda *a: None)
    assert stats is not None, f"run failed with exit code {code}"
    assert stats["server"]["server_version"] == NEXT_VERSION and not stats["server"]["is_simulator"]
    results = pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet")
    prompts = dict(pl.read_parquet(source).select("id", "prompt").iter_rows())

    # every id answered exactly once: one result row each, and Ollama answered each request once
    assert sorted(results["id"].to_list()) == sorted(prompts)
    sent, answered = proxy.counts()
    assert set(sent) == set(prompts.values()) and set(sent.values()) == {1} and answered == sent
    # every answer is Ollama's, with its token counts, mapped to our classes
    assert results["response"].null_count() == 0
    assert results["prompt_eval_count"].min() > 0 and results["eval_count"].max() <= ANSWER_TOKENS
    by_reason = dict(results.group_by("done_reason").len().iter_rows())
    assert set(by_reason) <= {"stop", "length"}
    cut = results.filter(pl.col("done_reason") == "length")
    assert (cut["error_class"] == "output_truncated").all() and (cut["eval_count"] == ANSWER_TOKENS).all()
    assert stats["requests"]["failed"] == cut.height  # no other failure on a healthy server
    assert results.filter(pl.col("error_class") == "context_truncated").is_empty()
    assert_reconciles(results, stats)
    if mode == "conversation":  # each chat's prompt grows turn by turn within num_ctx, by Ollama's count
        assert results["prompt_eval_count"].max() <= NUM_CTX


def test_a_model_that_cannot_load_stops_the_run_and_a_resume_finishes_it(tmp_path):
    """tests/support/ollama_breaker.py on v0.33.0. Its create refuses v0.24.0's damaged GGUF (an unknown
    architecture: `llama-quantize COPY` builds the model from it), so the weights carry an unknown tokenizer
    instead: every load of llama-server fails with llama.cpp's vocabulary error."""
    got = broken_then_repaired(tmp_path, ollama_paths(version=NEXT_VERSION), OLLAMA_PARALLEL, NUM_CTX,
                               ANSWER_TOKENS)
    assert got.first_code == 2, got
    assert "llama-server process has terminated" in got.first_last_line
    assert "unknown tokenizer" in got.first_last_line
    assert got.first_answered == 0
    assert got.first_sent <= 5 + 2 * OLLAMA_PARALLEL  # the breaker, not 40 rows x 6 attempts
    assert got.ids == got.expected_ids and got.null_responses == 0
    assert set(got.sent.values()) == {1} and got.answered == got.sent and len(got.sent) == 40


def test_an_over_long_prompt_is_refused_by_llama_server_and_recorded_as_context_truncated(proxy, tmp_path,
                                                                                       clean_process):
    """Digits are single tokens for Gemma: ~5,300 characters that the client's estimate lets through at
    num_ctx 2048 and llama-server counts at over 2,048. Ollama 0.33.0 passes llama-server's JSON refusal on
    as its message: the record carries llama-server's sentence, once, and the short rows are answered."""
    from chunkwise.commands.runner import execute

    over_long = "Add these up: " + " ".join(str(7 ** k % 1000003) for k in range(700))
    rows = {"short0": "Name a colour.", "over-long": over_long, "short1": "Name a fruit."}
    source = tmp_path / "in.parquet"
    pl.DataFrame({"id": list(rows), "prompt": list(rows.values())}).write_parquet(source)
    p = RunParams(input_path=str(source), host=proxy.url, model=MODEL_NAME, output_dir=str(tmp_path / "runs"),
                  run_name="long", num_ctx=NUM_CTX, num_predict=ANSWER_TOKENS, expected_answer_tokens=ANSWER_TOKENS,
                  parallel=OLLAMA_PARALLEL, system_prompt="Answer briefly.", mode="independent")
    proxy.reset()
    code, stats = execute(p, say=lambda *a: None)
    assert stats is not None, f"run failed with exit code {code}"
    results = {r["id"]: r for r in pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet").iter_rows(named=True)}
    long = results["over-long"]
    assert (long["status"], long["error_class"]) == ("failed", "context_truncated"), long
    assert "exceeds the available context size (2048 tokens)" in long["error_message"], long["error_message"]
    assert "{" not in long["error_message"]  # llama-server's sentence, not its JSON body
    assert proxy.counts()[0][over_long] == 1  # refused once, recorded, not sent again
    for rid in ("short0", "short1"):  # answered (cut at num_predict or not)
        assert results[rid]["response"] is not None and results[rid]["error_class"] in (None, "output_truncated")
