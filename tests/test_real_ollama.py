"""The real-Ollama tier: `chunkwise run` against Ollama v0.24.0 built from its Go module (`make ollama`),
serving Gemma 3 270M on 4 slots (`tests.support.ollama_fixture`), through the counting pass-through proxy.

Ollama is the judge the simulator cannot be: its own tokenizer, template, scheduler, errors and memory
figures. The generated text is not reproducible across builds and batching, so these tests assert
structure, counts and failure classes, never the text. Answers are capped at `ANSWER_TOKENS` (4): on 2 CPU
cores generation dominates (every token computes logits over Gemma's 262,144-token vocabulary).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import polars as pl
import pytest

from chunkwise.harness.ollama_server.paths import MODEL_NAME, ollama_paths
from chunkwise.harness.ollama_server.server import running_ollama
from chunkwise.params import RunParams
from tests.support.ollama_breaker import broken_then_repaired, cli_env
from tests.support.ollama_fixture import OLLAMA_ENV, OLLAMA_PARALLEL
from tests.support.pipeline_helpers import write_requests
from tests.support.real_engine_proxy import CountingProxy, counting_proxy, request_key
from tests.support.run_checks import assert_reconciles, ledger_records

pytestmark = [pytest.mark.ollama, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness"),
              pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]
N = 200
NUM_CTX = 2048
ANSWER_TOKENS = 4


@pytest.fixture(scope="module")
def proxy(ollama):
    with counting_proxy(ollama.url) as running:
        yield running


def params(proxy: CountingProxy, source: Path, out: Path, **changes) -> RunParams:
    values = dict(input_path=str(source), host=proxy.url, model=MODEL_NAME, output_dir=str(out), run_name="t",
                  num_ctx=NUM_CTX, num_predict=ANSWER_TOKENS, expected_answer_tokens=ANSWER_TOKENS,
                  parallel=OLLAMA_PARALLEL, system_prompt="Answer briefly.")
    values.update(changes)
    return RunParams(**values)


def run(p: RunParams) -> tuple[int, dict]:
    from chunkwise.commands.runner import execute

    return execute(p, say=lambda *a: None)


def prompts_by_id(source: Path) -> dict[str, str]:
    return dict(pl.read_parquet(source).select("id", "prompt").iter_rows())


def chat_requests(ollama, since: int = 0) -> int:
    """POST /api/chat lines in Ollama's own request log (gin), after the first `since` of them."""
    return max(ollama.log_text().count('"/api/chat"') - since, 0)


@pytest.mark.parametrize("mode", ["independent", "conversation"])
def test_200_requests_answered_exactly_once_with_ollamas_counts(proxy, ollama, tmp_path, clean_process, mode):
    source = write_requests(tmp_path / "in.parquet", N, prompt_words=8)
    # conversation: 8 chats of 25 turns, 4 at once; at trim 0.2 of 2048 tokens each chat is trimmed
    changes = dict(chunk_size=25, trim_threshold=0.2) if mode == "conversation" else dict(chunk_size=50)
    proxy.reset()
    started = time.monotonic()
    code, stats = run(params(proxy, source, tmp_path / "runs", mode=mode, **changes))
    elapsed = time.monotonic() - started
    assert stats is not None, f"run failed with exit code {code}"
    results = pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet")

    # every id answered exactly once: one result row each, and Ollama answered each request once
    assert sorted(results["id"].to_list()) == sorted(prompts_by_id(source))
    sent, answered = proxy.counts()
    assert set(sent) == set(prompts_by_id(source).values()) and set(sent.values()) == {1} and answered == sent
    # every answer is Ollama's: its token counts and done_reason, mapped to our classes
    assert results["response"].null_count() == 0
    assert results["prompt_eval_count"].min() > 0 and results["eval_count"].max() <= ANSWER_TOKENS
    by_reason = dict(results.group_by("done_reason").len().iter_rows())
    assert set(by_reason) <= {"stop", "length"}
    cut = results.filter(pl.col("done_reason") == "length")
    assert (cut["error_class"] == "output_truncated").all() and (cut["eval_count"] == ANSWER_TOKENS).all()
    assert stats["requests"]["failed"] == cut.height  # no other failure on a healthy server
    assert_reconciles(results, stats)
    if mode == "conversation":
        # trimming keeps every chat within num_ctx by Ollama's own count, and did trim: within a chat the
        # prompt shrinks at least once although every turn adds a pair
        assert results["prompt_eval_count"].max() <= NUM_CTX
        drops = results.sort("input_row").group_by("chunk", maintain_order=True).agg(
            (pl.col("prompt_eval_count").diff() < 0).sum().alias("drops"))
        assert drops["drops"].sum() > 0
    print(f"\n{mode}: {N} requests in {elapsed:.1f} s, {results['eval_count'].sum()} tokens generated, "
          f"{by_reason} finish reasons")


def spawn_run(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chunkwise", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def request_key_for(prompt: str) -> str:
    return request_key(json.dumps({"messages": [{"role": "user", "content": prompt}]}).encode()) or ""


def test_sigkill_mid_run_then_resume_sends_nothing_answered_again(proxy, ollama, tmp_path):
    n = 80
    source = write_requests(tmp_path / "in.parquet", n, prompt_words=8)
    env = cli_env(tmp_path)
    args = ["run", "--host", proxy.url, "--model", MODEL_NAME, "--input", str(source),
            "--output-dir", str(tmp_path / "runs"), "--run-name", "k", "--mode", "independent",
            "--num-ctx", str(NUM_CTX), "--num-predict", str(ANSWER_TOKENS), "--parallel", str(OLLAMA_PARALLEL),
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
    assert set(first_sent) | set(sent) == set(prompts.values())
    assert all(first_sent[k] + sent[k] <= 2 for k in prompts.values())
    # re-sent: at most the requests on the wire at the kill (`parallel`), plus answers received but not yet
    # fsynced to the ledger (a request gives its slot back as soon as its answer is in)
    resent = set(first_sent) & set(sent)
    assert len(resent) <= 2 * OLLAMA_PARALLEL
    print(f"\nkilled with {len(in_ledger)} of {n} in the ledger; re-sent {len(resent)}")


@pytest.mark.parametrize(("extra", "expected"), [
    (["--model", "no-such-model"], "no-such-model"),
    (["--model", MODEL_NAME, "--think", "on"], "thinking"),
])
def test_unknown_model_and_thinking_on_a_model_without_it_stop_before_any_chat(proxy, ollama, tmp_path, extra,
                                                                              expected):
    source = write_requests(tmp_path / "in.parquet", 5, prompt_words=4)
    before = chat_requests(ollama)
    proxy.reset()
    done = subprocess.run([sys.executable, "-m", "chunkwise", "run", "--host", proxy.url, "--input", str(source),
                           "--output-dir", str(tmp_path / "runs"), "--num-ctx", str(NUM_CTX), *extra],
                          cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("chunkwise run: ") and expected in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert chat_requests(ollama, before) == 0 and sum(proxy.counts()[0].values()) == 0


def test_structured_output_is_valid_json_in_every_ok_row(proxy, ollama, tmp_path, clean_process):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    source = write_requests(tmp_path / "in.parquet", 2 * OLLAMA_PARALLEL, prompt_words=6)
    proxy.reset()
    code, stats = run(params(proxy, source, tmp_path / "runs", mode="independent", num_predict=64,
                             chunk_size=OLLAMA_PARALLEL, format=schema))
    assert stats is not None, f"run failed with exit code {code}"
    results = pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet")
    ok = results.filter(pl.col("status") == "ok")
    assert ok.height >= 1
    for text in ok["response"]:
        jsonschema.validate(json.loads(text), schema)  # raises on an answer outside the schema
    others = results.filter(pl.col("status") != "ok")
    assert set(others["error_class"].to_list()) <= {"output_truncated", "invalid_output"}


def test_a_run_stopped_by_a_model_that_cannot_load_resumes_once_the_model_is_repaired(tmp_path):
    """The same model name and digest, broken and then repaired (tests/support/ollama_breaker.py): the first
    run stops with exit 2 and Ollama's message; the same command afterwards answers every row once."""
    got = broken_then_repaired(tmp_path, ollama_paths(), OLLAMA_PARALLEL, NUM_CTX, ANSWER_TOKENS)
    assert got.first_code == 2, got
    assert "unable to load model" in got.first_last_line
    assert got.first_answered == 0  # nothing answered: every load failed
    # the breaker, not the retries, ended it: a few attempts across the slots (each ~0.5 s on this server),
    # not 40 rows x 6 attempts
    assert got.first_sent <= 5 + 2 * OLLAMA_PARALLEL
    assert got.ids == got.expected_ids and got.null_responses == 0
    assert set(got.sent.values()) == {1} and got.answered == got.sent and len(got.sent) == 40


def test_a_full_queue_is_back_pressure_nothing_lost_nothing_failed(tmp_path, clean_process):
    """Ollama answers 503 "server busy" when more requests wait for a model load than OLLAMA_MAX_QUEUE
    (server/sched.go: pendingReqCh): one slot and a queue of one, and chunkwise starts 4 requests against a
    model not yet loaded. The 503s are back-pressure: retried until answered, never a failure."""
    source = write_requests(tmp_path / "in.parquet", 24, prompt_words=4)
    with running_ollama(1, max_queue=1, log_path=tmp_path / "ollama.log", extra_env=OLLAMA_ENV) as server, \
            counting_proxy(server.url) as proxy:
        code, stats = run(params(proxy, source, tmp_path / "runs", mode="independent", chunk_size=6))
        busy = server.log_text().count("| 503 |")
    assert stats is not None, f"run failed with exit code {code}"
    assert busy >= 1, "the server never answered 503: the test did not fill its queue"
    results = pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet")
    assert sorted(results["id"].to_list()) == sorted(prompts_by_id(source))
    assert results["response"].null_count() == 0
    assert stats["requests"]["failed_by_class"]["transient"] == 0, stats["requests"]
    sent, answered = proxy.counts()
    assert all(answered[k] == 1 for k in sent)
    print(f"\n{busy} answers 503 from Ollama; {sum(sent.values())} requests sent for 24 rows")


@pytest.mark.parametrize("name", [MODEL_NAME.upper(), f"registry.ollama.ai/library/{MODEL_NAME}:latest"])
def test_a_model_name_ollama_resolves_finds_the_same_digest_on_every_path(ollama, tmp_path, name):
    """Ollama itself is the judge of its name rule: another spelling of the served model gives the run the
    digest /api/tags lists, a shard's preflight the same digest, the worker a usable host, and the memory
    view (/api/ps) the loaded model."""
    from contextlib import closing

    from chunkwise.backend import ChatOptions, ChatRequest
    from chunkwise.cluster.worker import host_usable
    from chunkwise.run.prepare import prepare_run
    from chunkwise.servers import backend_for
    from chunkwise.settings import get_settings
    from chunkwise.store import lock

    listed = {m["name"]: m["digest"] for m in __import__("httpx").get(f"{ollama.url}/api/tags").json()["models"]}
    digest = listed[f"{MODEL_NAME}:latest"]
    p = RunParams(input_path=str(write_requests(tmp_path / "in.parquet", 3)), host=ollama.url, model=name,
                  output_dir=str(tmp_path / "runs"), run_name="t", num_ctx=NUM_CTX)
    prepared = prepare_run(p)
    lock.release(prepared.ctx.dir)
    assert prepared.ctx.model_digest == digest
    assert host_usable(ollama.url, name, digest[:12]) == (True, "")
    backend = backend_for("ollama")
    with closing(backend.client(ollama.url, get_settings(), connect_timeout_s=10, read_timeout_s=600)) as client:
        assert backend.inspect(client, name).digest == digest  # what a shard's preflight compares
        extras = backend.request_extras(think=None, keep_alive="5m")
        client.chat(ChatRequest(name, [{"role": "user", "content": "hi"}], ChatOptions(NUM_CTX, 1, 0.0, 0), None,
                                extras))
        entry = backend.memory(client, name)
    assert entry is not None and entry["digest"] == digest
#: Rows of very different density under Gemma's tokenizer (chars per prompt token measured on this server,
#: template and system prompt included, 2026-12-06: prose 4.1, code 2.9, CJK 1.8, indentation 1.6, digits 1.0),
#: each well inside num_ctx 2048. A real batch mixes them, and a characters-per-token figure calibrated on one
#: kind is wrong for the others.
DENSE = [" ".join(str(3 ** k % (100003 + i)) for k in range(60)) if i % 2 else
         "東京は日本の首都であり、多くの人々が毎日電車で通勤しています。" * (3 + i % 4) for i in range(24)]
SPARSE = {
    "prose": "Write one sentence about the history of the harbour town and its fishing boats. " * 4,
    "code": "def scale(values, factor):\n    return [v * factor for v in values if v is not None]\n" * 6,
    "letter": "Dear Sir or Madam, thank you for your letter of last week about the new timetable. " * 3,
    "indented": "{\n" + "".join(f'{" " * 24}"key{k}": {k},\n' for k in range(20)) + "}",
}


def test_an_over_long_prompt_is_context_truncated_and_mixed_density_rows_that_fit_are_not(proxy, ollama, tmp_path,
                                                                                          clean_process):
    """The dense rows come first, so the truncation check calibrates on them (at least 20 answers) before the
    sparser rows arrive: on a server that refuses over-long prompts (`truncate: false`, Ollama >= 0.12.6)
    none of those may be flagged, however far their density is from the calibration."""
    # digits are single tokens for Gemma: ~5,300 characters the client estimates at ~1,300 tokens (it fits
    # num_ctx 2048 by that estimate, so it is sent), which Ollama counts at over 2,048: refused, not cut
    over_long = "Add these up: " + " ".join(str(7 ** k % 1000003) for k in range(700))
    rows = {f"dense{i}": text for i, text in enumerate(DENSE)} | SPARSE | {"over-long": over_long}
    source = tmp_path / "in.parquet"
    pl.DataFrame({"id": list(rows), "prompt": list(rows.values())}).write_parquet(source)
    proxy.reset()
    code, stats = run(params(proxy, source, tmp_path / "runs", mode="independent", chunk_size=len(rows)))
    assert stats is not None, f"run failed with exit code {code}"
    results = {r["id"]: r for r in pl.read_parquet(Path(stats["run"]["dir"]) / "results.parquet").iter_rows(named=True)}
    long = results["over-long"]
    assert (long["status"], long["error_class"]) == ("failed", "context_truncated"), long
    assert proxy.counts()[0][over_long] == 1  # refused once, recorded, not sent again
    assert stats["truncation"]["calibration"]["calibrated"]
    flagged = {rid: r["error_message"] for rid, r in results.items() if rid != "over-long"
               and r["error_class"] == "context_truncated"}
    assert flagged == {}, flagged
    for rid in rows.keys() - {"over-long"}:
        assert results[rid]["prompt_eval_count"] < NUM_CTX and results[rid]["response"] is not None
    densities = {rid: round(len(rows[rid]) / results[rid]["prompt_eval_count"], 2)
                 for rid in ("dense0", "dense1", *SPARSE)}
    print(f"\nchars per prompt token (system prompt and template included): {densities}; calibration "
          f"{stats['truncation']['calibration']}")


#: Two contexts of one batch tier (Ollama 0.24.0: num_batch 512 at both), each a reload; ~30 s of prefill each.
MEMORY_CONTEXTS = [1024, 2048]


def logged_mib(log: str, what: str) -> list[float]:
    """Every `msg="<what>" ... size="X MiB"` of Ollama's log (ml/device.go:245-272), in order, MiB."""
    return [float(m) for m in re.findall(rf'msg="{what}"[^\n]*? size="([0-9.]+) MiB"', log)]


def test_plan_and_measure_predict_the_memory_ollama_reports(ollama, tmp_path, capsys):
    """Issue 18 item 3: the bytes per token `plan` predicts for the loaded model against what Ollama reports.
    /api/ps size grows 4 KiB per num_ctx token and slot on this server: 3 KiB of KV (3 global layers x 1 KV
    head x 512 x f16) and 1 KiB of the compute graph's f16 attention mask (num_batch 512 x 2 bytes per cell,
    kvcache/causal.go buildMask). The KV formula alone is 25 % short; plan and measure predict both parts. On
    this CPU-only server size_vram is 0: size is the memory (all in RAM), beside the runner's RSS."""
    from chunkwise.cli import main
    from chunkwise.measure.report import SOURCE_PS_SIZE
    from chunkwise.measure.run import run_measurement
    from chunkwise.ollama.client import OllamaClient

    with OllamaClient(ollama.url, read_timeout_s=900) as client:
        for loaded in client.ps():  # the runner measured is then the only one of this model
            httpx.post(f"{ollama.url}/api/generate", json={"model": loaded["name"], "keep_alive": 0}, timeout=60)
        log_before = len(ollama.log_text())
        report = run_measurement(client, MODEL_NAME, MEMORY_CONTEXTS, tmp_path / "measure", parallel=OLLAMA_PARALLEL)
    low, high = report.rows
    per_token = (high.ps_size_mib - low.ps_size_mib) / (high.num_ctx - low.num_ctx)  # /api/ps at two num_ctx
    assert report.vram_source == SOURCE_PS_SIZE and all(r.in_fit and r.ps_size_vram_mib == 0 for r in report.rows)
    assert report.slope_mib_per_token == pytest.approx(per_token) and not report.warnings
    assert abs(report.predicted_relative_difference) < 0.05, report.markdown
    assert report.relative_difference > 0.25 and any("attention mask grows" in n for n in report.notes)
    # what the runner logged for these two loads: the KV cache and the compute graph, apart
    log = ollama.log_text()[log_before:]
    kv_log, graph_log = logged_mib(log, "kv cache")[-2:], logged_mib(log, "compute graph")[-2:]
    span = OLLAMA_PARALLEL * (high.num_ctx - low.num_ctx)
    assert kv_log[1] - kv_log[0] == pytest.approx(report.formula_mib_per_token_per_slot * span, abs=0.1)
    assert graph_log[1] - graph_log[0] == pytest.approx(report.mask_mib_per_token / OLLAMA_PARALLEL * span, abs=0.1)
    # the runner's RSS: above size at each context, and explained where it differs
    assert all(r.rss_mib and r.rss_mib > r.ps_size_mib for r in report.rows)
    assert report.fit_rss is not None and any(n.startswith("runner RSS (VmRSS") for n in report.notes)

    source = tmp_path / "in.parquet"
    pl.DataFrame({"id": ["a"], "prompt": ["Say hello."]}).write_parquet(source)
    assert main(["plan", "--input", str(source), "--host", ollama.url, "--model", MODEL_NAME, "--num-ctx",
                 str(high.num_ctx), "--parallel", str(OLLAMA_PARALLEL), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["engine"] == "ollama" and plan["server_version"] == "0.24.0"
    assert abs(plan["memory_mib_per_token"] * OLLAMA_PARALLEL / per_token - 1) < 0.05
    assert plan["kv_mib_per_token"] == report.formula_mib_per_token_per_slot
    assert f"{plan['kv_reserved_mib']:.1f}" == f"{kv_log[1]:.1f}"  # the whole cache, windowed layers included
    print(f"\n/api/ps size {per_token * 1024 / OLLAMA_PARALLEL:.3f} KiB per token and slot; plan "
          f"{plan['memory_mib_per_token'] * 1024:.3f} KiB (KV {plan['kv_mib_per_token'] * 1024:.3f}); runner RSS "
          f"{report.fit_rss.slope_mib_per_token * 1024 / OLLAMA_PARALLEL:.3f} KiB; sizes "
          f"{[r.ps_size_mib for r in report.rows]} MiB, RSS {[r.rss_mib for r in report.rows]} MiB")
