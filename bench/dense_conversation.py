"""Benchmark (issue 9 done-when): conversation mode with code-like prompts against a SIMULATOR whose
tokenizer packs text 1.5x denser than the client's 4 characters per token (`--token-density 1.5`).
Every request must be answered, with at most one harder-trimmed retry per overflow; the count of
those retries is the figure.

    .venv/bin/python -m bench.dense_conversation [--rows 400] [--num-ctx 8192] [--parallel 2]
                                                 [--chars-per-token X] [--prefill-tps T] [--decode-tps T]

`chunkwise run` runs as a subprocess through the real Prefect flow, the chunk size computed by chunkwise. By
default a conversation run sizes its chunks from the server's count of a sample of its rows
(`chunkwise.run.density`); `--chars-per-token 4` sizes them at the client's fixed ratio instead, as every run
did before (issue 19 item 7: the "before" of the comparison), so conversations must trim. Reported besides the
retries: the simulator's prompt tokens evaluated (a trim drops the front of the chat, so the kept history is
evaluated again) and served from its prefix cache, and its slot window at the given prefill and decode rates.
Results: bench/results/dense_conversation.md, one section per sizing.
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

from bench.procs import RUN_ROOTS, replace_section
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
    ap.add_argument("--chars-per-token", type=float, default=None,
                    help="passed to the run (sizes the chunks at this ratio); left out: the server's count")
    ap.add_argument("--prefill-tps", type=float, default=4000.0, help="the simulator's prefill rate per slot")
    ap.add_argument("--decode-tps", type=float, default=1000.0, help="the simulator's decode rate per slot")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cw-dense-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "code.parquet"
        code_like(args.rows).write_parquet(data)
        options = SimOptions(port=0, parallel=args.parallel, token_density=1.5, answer_tokens=(40, 160),
                             prefill_tps=args.prefill_tps, decode_tps=args.decode_tps)
        env = {**os.environ, **RUN_ROOTS, "PREFECT_HOME": str(tmp / "home"), "PREFECT_LOGGING_LEVEL": "WARNING",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
        with running_simulator(options, process=True) as sim:
            argv = [sys.executable, "-m", "chunkwise", "run", "--input", str(data), "--model", "llama3.1:8b",
                    "--host", sim.url, "--mode", "conversation", "--parallel", str(args.parallel),
                    "--num-ctx", str(args.num_ctx), "--num-predict", "256", "--output-dir", str(tmp / "runs"),
                    "--run-name", "dense"]
            if args.chars_per_token is not None:
                argv += ["--chars-per-token", str(args.chars_per_token)]
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
    plan = manifest["chunk_plan"]
    sized = (f"server count, {plan['sizing']['chars_per_token']:.2f} chars/token" if plan.get("sizing") else
             f"fixed {manifest['chars_per_token']:g} chars/token")
    flag = "" if args.chars_per_token is None else f" --chars-per-token {args.chars_per_token:g}"
    label = f"chunks sized by {'the server count' if args.chars_per_token is None else 'a fixed ratio'}"
    prompt_tokens = sim_stats["prompt_tokens"]
    lines = [
        f"## {label}",
        "",
        f"Machine: {platform.node()} ({os.cpu_count()} CPUs), {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Server: the simulator "
        f"at token density 1.5, prefill {args.prefill_tps:g} and decode {args.decode_tps:g} tokens/s per slot "
        "(SIMULATOR figures, not Ollama).",
        f"Command: `python -m bench.dense_conversation --rows {args.rows} --num-ctx {args.num_ctx} "
        f"--parallel {args.parallel} --prefill-tps {args.prefill_tps:g} --decode-tps {args.decode_tps:g}{flag}`",
        "",
        "| requests | answered | exit | chunks (size; sized by) | prompt tokens evaluated / served from cache "
        "(simulator) | turns retried after trimming harder | most retries of one turn | largest prompt (server "
        "tokens) | characters per server token | server 400s (context exceeded) | slot window s | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.rows} | {ok} | {proc.returncode} | {plan['chunks']} ({plan['chunk_size']}; {sized}) | "
        f"{prompt_tokens['evaluated']:,} / {prompt_tokens['cached']:,} | {retried} | {worst} | "
        f"{peak:,} of num_ctx {args.num_ctx:,} | {chars_per_token:.2f} | "
        f"{sim_stats['requests'].get('/api/chat', {}).get('400', 0)} | {sim_stats['slots']['window_s']:.1f} | "
        f"{wall:.1f} |",
        "",
        f"stats.json retries: {stats['retries']}.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        head = ["# Conversation mode on dense text (SIMULATOR, token density 1.5)", "",
                "From `python -m bench.dense_conversation` (see its docstring): code-like prompts that a client "
                "assuming 4 characters per token under-counts about 2.7 times. One section per chunk sizing; the "
                "server count (issue 19 item 7) is the default.", ""]
        replace_section(RESULTS, head, label, lines)
    if proc.returncode != 0 or ok != args.rows or worst > 1:
        raise SystemExit(f"unexpected: exit {proc.returncode}, answered {ok}, worst {worst}\n{proc.stdout[-3000:]}")


if __name__ == "__main__":
    main()
