"""A run stopped by a real Ollama model that cannot load, then resumed once the model is repaired.

Shared by the real-Ollama tiers of both versions (tests/test_real_ollama.py for v0.24.0,
tests/test_real_ollama_next.py for v0.33.0). A server of its own whose model store holds `gemma3-270m`;
the model's blob is damaged in place with that version's damage (chunkwise/harness/ollama_server/models.py
`DAMAGE`: an unknown architecture for v0.24.0; for v0.33.0, whose `ollama create` refuses an unknown
architecture, an unknown tokenizer), so every load fails under the same name and digest; then the blob's
own bytes are put back. The first `chunkwise run` must stop with exit 2 and Ollama's message, stopped by
the breaker rather than the retries; the same command afterwards must answer every row exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from chunkwise.harness.llama_server.paths import engine_paths
from chunkwise.harness.ollama_server.models import create, damaged_copy
from chunkwise.harness.ollama_server.paths import MODEL_NAME, OllamaPaths
from chunkwise.harness.ollama_server.server import running_ollama
from tests.support.pipeline_helpers import write_requests
from tests.support.real_engine_proxy import counting_proxy

REPO = Path(__file__).resolve().parents[2]
ROWS = 40


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `python -m chunkwise` child: the session's Prefect API, a home of its own."""
    from prefect.settings import get_current_settings

    return {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
            "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class BrokenThenRepaired:
    """What the two runs did. `first_*`: the run against the damaged model; `sent`/`answered`: request
    fingerprint -> count at the proxy during the second run."""

    first_code: int
    first_last_line: str
    first_sent: int
    first_answered: int
    second_code: int
    sent: dict[str, int]
    answered: dict[str, int]
    ids: list[str]
    expected_ids: list[str]
    null_responses: int


def broken_then_repaired(tmp_path: Path, paths: OllamaPaths, parallel: int, num_ctx: int,
                         answer_tokens: int) -> BrokenThenRepaired:
    gguf = engine_paths().model
    store = tmp_path / "models"
    with running_ollama(parallel, paths=paths, log_path=tmp_path / "ollama.log",
                        extra_env={"OLLAMA_MODELS": str(store)}) as server, counting_proxy(server.url) as proxy:
        create(server, MODEL_NAME, gguf, tmp_path / "modelfiles")
        # the model's weights: the largest blob (v0.33.0's create stores a llama-quantize copy of the GGUF)
        blob = max((store / "blobs").iterdir(), key=lambda b: b.stat().st_size)
        intact = blob.read_bytes()
        damaged_copy(blob, blob, paths.version)
        source = write_requests(tmp_path / "in.parquet", ROWS, prompt_words=4)
        args = ["run", "--host", proxy.url, "--input", str(source), "--model", MODEL_NAME, "--output-dir",
                str(tmp_path / "runs"), "--run-name", "r", "--num-ctx", str(num_ctx), "--num-predict",
                str(answer_tokens), "--parallel", str(parallel), "--mode", "independent"]
        first = subprocess.run([sys.executable, "-m", "chunkwise", *args], cwd=REPO, env=cli_env(tmp_path),
                               capture_output=True, text=True, timeout=600)
        first_sent, first_answered = proxy.counts()
        blob.write_bytes(intact)  # repaired: the same bytes, the same digest
        proxy.reset()
        second = subprocess.run([sys.executable, "-m", "chunkwise", *args], cwd=REPO, env=cli_env(tmp_path),
                                capture_output=True, text=True, timeout=900)
        sent, answered = proxy.counts()
    lines = first.stderr.strip().splitlines()
    assert second.returncode in (0, 1), second.stdout + second.stderr
    results = pl.read_parquet(tmp_path / "runs" / "r" / "results.parquet")
    return BrokenThenRepaired(first.returncode, lines[-1] if lines else first.stdout, sum(first_sent.values()),
                              sum(first_answered.values()), second.returncode, sent, answered,
                              sorted(results["id"].to_list()), sorted(pl.read_parquet(source)["id"].to_list()),
                              results["response"].null_count())
