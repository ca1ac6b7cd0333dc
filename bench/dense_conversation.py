"""Benchmark (issue 9 done-when): conversation mode with code-like prompts against a SIMULATOR whose
tokenizer packs text 1.5x denser than the client's 4 characters per token (`--token-density 1.5`).
Every request must be answered, with at most one harder-trimmed retry per overflow; the count of
those retries is the figure.

    .venv/bin/python -m bench.dense_conversation [--rows 400] [--num-ctx 8192] [--parallel 2]

`chunkwise run` runs as a subprocess through the real Prefect flow; the chunk size is computed by
chunkwise from its own (too optimistic) estimate, so conversations must trim.
Results: bench/results/dense_conversation.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.procs import RUN_ROOTS, publish
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.store.files import read_json

RESULTS = Path(__file__).resolve().parent / "results" / "dense_conversation.md"


def code_like(n: int) -> pl.DataFrame:
    """Requests that look like code: identifiers, numbers, hex ids, punctuation (dense for a BPE)."""
    def prompt(i: int) -> str:
        lines = [f"def handler_{i}_{j}(req, ctx):\n    return {{'id': {i * 7919 + j}, 'k': req.get('k_{j}', "
                 f"[{i}, {j}, 0x{i * 31 + j:06x}])}}  # {i:04d}.{j}" for j in range(3 + i % 9)]
        return "Review this code and name one bug:\n" + "\n".join(lines)
    return pl.DataFrame({"id": list(range(n)), "prompt": [prompt(i) for i in range(n)]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--num-ctx", type=int, default=8192)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-dense-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "code.parquet"
        code_like(args.rows).write_parquet(data)
        options = SimOptions(port=0, parallel=args.parallel, token_density=1.5, answer_tokens=(40, 160))
        env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(tmp / "home"), "PREFECT_LOGGING_LEVEL": "WARNING",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
        with running_simulator(options, process=True) as sim:
            argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", "llama3.1:8b",
                    "--host", sim.url, "--mode", "conversation", "--parallel", str(args.parallel),
                    "--num-ctx", str(args.num_ctx), "--num-predict", "256", "--output-dir", str(tmp / "runs"),
                    "--run-name", "dense"]
            started = time.perf_counter()
            proc = subprocess.run(argv, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            sim_stats = sim.stats(fingerprints=False)
        run_dir = tmp / "runs" / "dense"
        table = pl.read_parquet(run_dir / "results.parquet")
        stats = read_json(run_dir / "stats.json")
        manifest = read_json(run_dir / "manifest.json")
    ok = int((table["status"] == "ok").sum())
    retried = int(table["context_retries"].sum())
    worst = int(table["context_retries"].max())
    chars_per_token = (table["prompt_chars"].sum() / table["prompt_eval_count"].sum()) if ok else None
    peak = int(table["prompt_eval_count"].max())
    lines = [
        "# Conversation mode on dense text (SIMULATOR, token density 1.5)",
        "",
        f"Machine: {platform.node()} ({os.cpu_count()} CPUs), {platform.python_version()}; "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Server: `chunkwise sim --token-density 1.5` "
        "(a simulator, not Ollama).",
        f"Command: `python -m bench.dense_conversation --rows {args.rows} --num-ctx {args.num_ctx} "
        f"--parallel {args.parallel}`",
        "",
        "| requests | answered | exit | chunks (computed) | turns retried after trimming harder | most retries of one turn | "
        "largest prompt (server tokens) | characters per server token | server 400s (context exceeded) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.rows} | {ok} | {proc.returncode} | {manifest['chunk_plan']['chunks']} | {retried} | {worst} | "
        f"{peak:,} of num_ctx {args.num_ctx:,} | {chars_per_token:.2f} (client assumes 4.0) | "
        f"{sim_stats['requests'].get('/api/chat', {}).get('400', 0)} | {wall:.1f} |",
        "",
        f"stats.json retries: {stats['retries']}.",
    ]
    publish(lines, RESULTS, write=not args.no_write)
    if proc.returncode != 0 or ok != args.rows or worst > 1:
        raise SystemExit(f"unexpected: exit {proc.returncode}, answered {ok}, worst {worst}\n{proc.stdout[-3000:]}")


if __name__ == "__main__":
    main()
