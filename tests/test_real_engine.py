"""The real-engine tier: `chunkwise run --api openai` against llama-server with Gemma 3 270M
(`tests.engine_fixture`: 4 slots x 2048 tokens), through a counting pass-through proxy.

The generated text is not reproducible on a real engine (research/real-engine.md section 4), so
these tests assert structure, counts and failure classes, never the text. Answers are capped at
`ANSWER_TOKENS` (4): generation dominates on 2 CPU cores (each generated token computes logits over
Gemma 3's 262,144-token vocabulary; 200 requests of ~45 prompt tokens on 4 slots, in the heavy lock
on this box, 2026-11-28: 115 s with 16-token answers, 45 s with 4, 38 s with 1), and a capped answer
still exercises every count, failure class and reconciliation asserted below.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import polars as pl
import pytest

from chunkwise.params import RunParams
from chunkwise.tokens import MIN_SAMPLES
from tests.support.engine_fixture import ENGINE_CTX, ENGINE_PARALLEL
from tests.support.pipeline_helpers import write_requests
from tests.support.real_engine_proxy import (
    CountingProxy,
    counting_proxy,
    engine_metrics,
    request_key,
)
from tests.support.run_checks import ledger_records

# timeout: a 2-core machine shared with other work runs llama-server many times slower than alone
pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness"),
              pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]
SLOT_CTX = ENGINE_CTX // ENGINE_PARALLEL
MODEL = "gemma3-270m"
N = 200
#: max_tokens of the runs below: every answer is the engine's, cut by the cap (`length`) or stopped.
ANSWER_TOKENS = 4


@pytest.fixture(scope="module")
def proxy(engine):
    with counting_proxy(engine.url) as running:
        yield running


def params(proxy: CountingProxy, source: Path, out: Path, **changes) -> RunParams:
    values = dict(input_path=str(source), api="openai", host=proxy.url, model=MODEL, output_dir=str(out),
                  run_name="t", num_ctx=SLOT_CTX, num_predict=ANSWER_TOKENS,
                  expected_answer_tokens=ANSWER_TOKENS,
                  parallel=ENGINE_PARALLEL, system_prompt="Answer briefly.")
    values.update(changes)
    return RunParams(**values)


def run(p: RunParams) -> tuple[int, dict]:
    from chunkwise.commands.runner import execute

    return execute(p, say=lambda *a: None)


def prompts_by_id(source: Path) -> dict[str, str]:
    return dict(pl.read_parquet(source).select("id", "prompt").iter_rows())


def assert_reconciles(results: pl.DataFrame, stats: dict, before: dict, after: dict) -> None:
    """chunkwise's statistics are the sums of the engine's own counts, and the engine's counters moved
    by exactly what the results record (no request was answered that the results do not hold)."""
    r = stats["requests"]
    assert r["reconciles"] and r["total"] == results.height
    assert r["succeeded"] == results.filter(pl.col("status") == "ok").height
    assert stats["tokens"]["generated"] == results["eval_count"].sum()
    assert stats["tokens"]["prompt_evaluated"] == results["prompt_eval_count"].sum()
    assert after["tokens_predicted_total"] - before["tokens_predicted_total"] == results["eval_count"].sum()
    prompt_delta = sum(after[k] - before[k] for k in ("prompt_tokens_total", "prompt_tokens_cached_total"))
    assert prompt_delta == results["prompt_eval_count"].sum()


def assert_calibrated_from_the_engine(results: pl.DataFrame, stats: dict, num_ctx: int) -> None:
    """The truncation check's chars-per-token is the median of the engine's real counts."""
    calibration = stats["truncation"]["calibration"]
    usable = results.filter(pl.col("prompt_eval_count") < num_ctx // 2)
    ratios = (usable["prompt_chars"] / usable["prompt_eval_count"]).to_list()
    assert calibration["samples"] == len(ratios)
    assert calibration["calibrated"] == (len(ratios) >= MIN_SAMPLES)
    if calibration["calibrated"]:
        assert calibration["chars_per_token"] == pytest.approx(statistics.median(ratios), abs=1e-4)


@pytest.mark.parametrize("mode", ["independent", "conversation"])
def test_200_requests_answered_exactly_once_with_the_engines_counts(proxy, engine, tmp_path, clean_process,
                                                                     mode):
    source = write_requests(tmp_path / "in.parquet", N, prompt_words=8)
    # conversation: 8 chats of 25 turns, 4 at once; at trim 0.2 of 2048 tokens each chat is trimmed
    changes = dict(chunk_size=25, trim_threshold=0.2) if mode == "conversation" else dict(chunk_size=50)
    proxy.reset()
    before = engine_metrics(engine.url)
    started = time.monotonic()
    code, stats = run(params(proxy, source, tmp_path / "runs", mode=mode, **changes))
    elapsed = time.monotonic() - started
    after = engine_metrics(engine.url)
    assert stats is not None, f"run failed with exit code {code}"
    results = pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet")

    # every id answered exactly once: one result row each, and the engine answered each request once
    assert sorted(results["id"].to_list()) == sorted(prompts_by_id(source))
    sent, answered = proxy.counts()
    keys = set(prompts_by_id(source).values())
    assert set(sent) == keys and set(sent.values()) == {1} and answered == sent
    # every answer is the engine's: its token counts, its finish reason, mapped to our classes
    assert results["response"].null_count() == 0
    assert results["prompt_eval_count"].min() > 0 and results["eval_count"].max() <= ANSWER_TOKENS
    by_reason = dict(results.group_by("done_reason").len().iter_rows())
    assert set(by_reason) <= {"stop", "length"}
    truncated = results.filter(pl.col("done_reason") == "length")
    assert (truncated["error_class"] == "output_truncated").all() and (truncated["eval_count"] == ANSWER_TOKENS).all()
    assert stats["requests"]["failed_by_class"]["output_truncated"] == truncated.height
    assert stats["requests"]["failed"] == truncated.height  # no other failure on a healthy engine
    assert_reconciles(results, stats, before, after)
    assert_calibrated_from_the_engine(results, stats, SLOT_CTX)
    assert stats["server"]["api"] == "openai"
    if mode == "conversation":
        # trimming keeps every chat below trim x num_ctx by the engine's own count, and did trim:
        # within a chat the prompt shrinks at least once although every turn adds a pair
        assert results["prompt_eval_count"].max() <= SLOT_CTX
        drops = results.sort("input_row").group_by("chunk", maintain_order=True).agg(
            (pl.col("prompt_eval_count").diff() < 0).sum().alias("drops"))
        assert drops["drops"].sum() > 0
    print(f"\n{mode}: {N} requests in {elapsed:.1f} s, {results['eval_count'].sum()} tokens generated, "
          f"{by_reason} finish reasons")


def test_context_and_output_truncation_are_classified_with_the_engines_numbers(proxy, engine, tmp_path,
                                                                               clean_process):
    source = tmp_path / "in.parquet"
    # about 3,000 Gemma tokens: over the 2,048 of a slot, yet under chunkwise's quarantine bound
    # (num_ctx - num_predict tokens even at 8 characters per token)
    long_prompt = "Summarise: " + " ".join(f"item{j} costs {j * 7 % 1000} euros," for j in range(600))
    pl.DataFrame({"id": ["long", "a", "b"], "prompt": [long_prompt, "Tell me a long story about a cat.",
                                                       "Describe the sea in many words."]}).write_parquet(source)
    proxy.reset()
    code, stats = run(params(proxy, source, tmp_path / "runs", mode="independent", num_predict=4, chunk_size=3))
    assert stats is not None, f"run failed with exit code {code}"
    results = {r["id"]: r for r in pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet").iter_rows(named=True)}
    long = results["long"]
    assert (long["status"], long["error_class"]) == ("failed", "context_truncated")
    assert f"exceeds the server's context of {SLOT_CTX} tokens per slot" in long["error_message"]
    n_prompt = int(long["error_message"].split("prompt of ")[1].split(" tokens")[0])
    assert n_prompt > SLOT_CTX
    sent, _answered = proxy.counts()
    assert sent[long_prompt] == 1  # refused once, recorded, not sent again
    for rid in ("a", "b"):  # a 4-token cap cuts these answers
        r = results[rid]
        assert r["done_reason"] == "length" and r["eval_count"] == 4 and r["response"] is not None
        assert (r["status"], r["error_class"]) == ("failed", "output_truncated")
    assert stats["requests"]["failed_by_class"]["context_truncated"] == 1


@pytest.fixture
def api_key(monkeypatch):
    """CHUNKWISE_API_KEY set for one test (settings are read once per process: re-read around it)."""
    from chunkwise.settings import get_settings

    key = "sk-chunkwise-test-" + "7" * 20
    monkeypatch.setenv("CHUNKWISE_API_KEY", key)
    get_settings.cache_clear()
    yield key
    get_settings.cache_clear()


def test_structured_output_parses_against_the_schema_and_the_api_key_stays_secret(
        proxy, engine, tmp_path, clean_process, api_key, capfd, caplog):
    key = api_key
    proxy.reset()
    # llama.cpp's schema grammar allows up to 2 newlines and 20 spaces between tokens, and this base model
    # takes them: an answer can run out of tokens inside the JSON. The grammar guarantees the schema for a
    # complete answer; a cut one must be classified output_truncated, never accepted or called invalid.
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    # one request per slot: one round of ~140-token answers (the whitespace the grammar allows) on 2 cores
    source = write_requests(tmp_path / "in.parquet", ENGINE_PARALLEL, prompt_words=6)
    code, stats = run(params(proxy, source, tmp_path / "runs", mode="independent", num_predict=160,
                             chunk_size=ENGINE_PARALLEL, format=schema))
    assert stats is not None, f"run failed with exit code {code}"
    results = pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet")
    complete = results.filter(pl.col("done_reason") == "stop")
    assert results.height == ENGINE_PARALLEL and complete.height >= 1
    assert (complete["status"] == "ok").all()
    for text in complete["response"]:
        jsonschema.validate(json.loads(text), schema)  # raises on an answer outside the schema
    cut = results.filter(pl.col("done_reason") != "stop")
    assert (cut["error_class"] == "output_truncated").all()
    # the key went to the server as a Bearer token, and nowhere else
    assert proxy.auth == {f"Bearer {key}"}
    run_dir = Path(stats["run"]["dir"])
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaked == []
    out, err = capfd.readouterr()
    assert key not in out + err + caplog.text


def spawn_run(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chunkwise", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_run_then_resume_sends_nothing_answered_again(proxy, engine, tmp_path):
    from prefect.settings import get_current_settings

    n = 80
    source = write_requests(tmp_path / "in.parquet", n, prompt_words=8)
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PYTHONUNBUFFERED": "1"}
    args = ["run", "--api", "openai", "--host", proxy.url, "--model", MODEL, "--input", str(source),
            "--output-dir", str(tmp_path / "runs"), "--run-name", "k", "--mode", "independent",
            "--num-ctx", str(SLOT_CTX), "--num-predict", str(ANSWER_TOKENS), "--parallel", str(ENGINE_PARALLEL),
            "--chunk-size", "10"]
    proxy.reset()
    proc = spawn_run(args, env)
    deadline = time.monotonic() + 1200
    while sum(proxy.counts()[1].values()) < n // 3:  # about a third answered: kill mid-run
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the run answered too little in 1200 s"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    records, _dropped = ledger_records(tmp_path / "runs" / "k")
    prompts = prompts_by_id(source)
    ids = pl.read_parquet(source)["id"].to_list()
    in_ledger = {request_key_for(prompts[ids[r["_row"]]]) for r in records}
    assert 0 < len(in_ledger) < n

    first_sent, _ = proxy.counts()
    proxy.reset()
    resumed = spawn_run(args, env)
    out, _ = resumed.communicate(timeout=1500)
    assert resumed.returncode in (0, 1), out
    sent, _answered = proxy.counts()
    assert not in_ledger & set(sent), "an answer already in the ledger was sent again"
    results = pl.read_parquet(tmp_path / "runs" / "k" / "results.parquet")
    assert sorted(results["id"].to_list()) == sorted(ids)  # no row lost or doubled
    assert results["response"].null_count() == 0
    # whatever was in flight at the kill was sent once more, and nothing else
    assert set(first_sent) | set(sent) == set(prompts.values())
    assert all(first_sent[k] + sent[k] <= 2 for k in prompts.values())
    # Sent again: what was on the wire at the kill (at most `parallel`, the slots) plus answers received
    # but not yet appended to the ledger (a request gives its slot back as soon as its answer is in, so
    # the next one can be on the wire meanwhile; the append takes milliseconds, an answer seconds).
    assert len(set(first_sent) & set(sent)) <= 2 * ENGINE_PARALLEL


def request_key_for(prompt: str) -> str:
    return request_key(json.dumps({"messages": [{"role": "user", "content": prompt}]}).encode()) or ""


def test_plan_reads_the_engines_slots_and_its_models_sliding_window_layout(engine, tmp_path):
    """`chunkwise plan --api openai` on the running engine: its slots from /props, the KV formula from
    the GGUF it loaded (Gemma 3: 3 of 18 layers global, 1 KV head of 256, so 3 KiB per token)."""
    source = write_requests(tmp_path / "in.parquet", 10)
    done = subprocess.run([sys.executable, "-m", "chunkwise", "plan", "--input", str(source), "--api", "openai",
                           "--host", engine.url, "--model", MODEL, "--num-ctx", str(SLOT_CTX), "--parallel",
                           str(ENGINE_PARALLEL), "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    assert (p["server_slots"], p["server_slot_ctx"]) == (ENGINE_PARALLEL, SLOT_CTX)
    assert p["model_info_source"].startswith(f"GGUF header of {engine.config.model}")
    assert p["kv_mib_per_token"] * 2**20 == 3 * 1024
    assert not [a for a in p["advice"] if "the server" in a]


@pytest.mark.parametrize(("think", "says"), [("on", "never reads enable_thinking"),
                                             ("high", "takes no thinking levels")])
def test_think_the_engines_template_cannot_take_is_refused_before_anything_is_sent(engine, tmp_path, think, says):
    """Gemma 3's chat template reads no thinking switch: `--think` is refused in one line (exit 2) from what
    the engine's /props says of its template, never sent and ignored."""
    source = write_requests(tmp_path / "in.parquet", 3)
    done = subprocess.run([sys.executable, "-m", "chunkwise", "run", "--input", str(source), "--api", "openai",
                           "--host", engine.url, "--model", MODEL, "--num-ctx", str(SLOT_CTX), "--think", think,
                           "--output-dir", str(tmp_path / "runs")], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--think {think} with --api openai" in lines[0] and says in lines[0]
