"""`chunkwise sample`: write a deterministic synthetic request set (see chunkwise.inputs.sample)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from chunkwise.errors import SetupError

NAME = "sample"
HELP = "Write a deterministic synthetic request set (Parquet) for demos, tests and benchmarks."
MAX_ROWS = 10_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, required=True, metavar="N", help="number of requests")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="Parquet file to write (parent directories are created)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="same seed, same bytes (default 0)")
    parser.add_argument("--system-prompt-out", metavar="PATH",
                        help="also write a sample system prompt of --system-tokens tokens to this text file")
    parser.add_argument("--system-tokens", type=int, default=2400, metavar="N",
                        help="tokens of the sample system prompt (default 2400)")


def run(args: argparse.Namespace) -> int:
    from chunkwise.inputs.sample import sample_system_prompt, write_sample

    if not 1 <= args.rows <= MAX_ROWS:
        raise SetupError(f"--rows {args.rows} is out of range; give 1 to {MAX_ROWS}")
    if args.seed < 0:
        raise SetupError(f"--seed {args.seed} is negative; give 0 or more")
    if args.system_tokens < 1:
        raise SetupError(f"--system-tokens {args.system_tokens} must be at least 1")
    out = Path(args.out)
    if out.is_dir():
        raise SetupError(f"--out {out} is a directory; give a file path such as {out / 'requests.parquet'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        stats = write_sample(out, args.rows, args.seed)
        elapsed = time.perf_counter() - started
        if args.system_prompt_out:
            Path(args.system_prompt_out).write_text(sample_system_prompt(args.system_tokens), encoding="utf-8")
    except OSError as exc:
        raise SetupError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    print(
        f"wrote {stats.rows} rows to {out} ({stats.bytes / 1e6:.1f} MB, mean prompt "
        f"{stats.mean_prompt_chars:.0f} characters) in {elapsed:.1f} s"
        + (f"; system prompt of {args.system_tokens} tokens to {args.system_prompt_out}"
           if args.system_prompt_out else "")
    )
    return 0
