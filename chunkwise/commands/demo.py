"""`chunkwise demo` (`make demo`): 5,000 sample requests through the real flow, against chunkwise's Ollama SIMULATOR.

Nothing here talks to a real Ollama: the simulator (`chunkwise sim`) answers with deterministic
text and realistic token counts and timing. The run goes through Prefect's ephemeral API exactly
as `chunkwise run` does against a real server; only the host differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from chunkwise.errors import EXIT_OK

DATA = Path("data/demo-requests.parquet")
SYSTEM = Path("data/demo-system-prompt.txt")
ROWS = 5_000

NAME = "demo"
HELP = "Run 5,000 sample requests through the real flow against the built-in Ollama simulator."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags: the demo is one fixed, reproducible run."""


def run(args: argparse.Namespace) -> int:
    return main()


def main() -> int:
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    from chunkwise.commands.runner import execute, print_summary
    from chunkwise.harness.sim.harness import running_simulator
    from chunkwise.harness.sim.options import SimOptions
    from chunkwise.inputs.sample import sample_system_prompt, write_sample
    from chunkwise.params import RunParams
    from chunkwise.store.layout import RunPaths

    DATA.parent.mkdir(parents=True, exist_ok=True)  # `chunkwise demo` outside a checkout has no data/ yet
    if not DATA.exists():
        print(f"writing {ROWS:,} sample requests to {DATA}")
        write_sample(DATA, ROWS, seed=0)
    if not SYSTEM.exists():
        SYSTEM.write_text(sample_system_prompt(2400), encoding="utf-8")
    # Rates chosen so the demo takes about a minute: fast enough to watch, slow enough to see progress.
    options = SimOptions(port=0, parallel=4, prefill_tps=400_000, decode_tps=20_000, load_ms=500)
    with running_simulator(options) as sim:
        print(f"\nSIMULATOR: chunkwise's Ollama simulator is listening on {sim.url} -- "
              "this demo does not use a real Ollama.\n")
        # The defaults a first real run gets (independent mode, num_ctx 8192, parallel 4: README "Defaults"); a
        # run name of its own each time, so every `make demo` sends its 5,000 requests.
        params = RunParams(
            input_path=str(DATA), model="llama3.1:8b", host=sim.url, system_prompt_file=str(SYSTEM),
            output_dir="runs", run_name=f"demo-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}",
        )
        started = time.monotonic()
        code, stats = execute(params, command="demo")
        print(f"\nfinished in {time.monotonic() - started:.1f} s (exit code {code}) against the SIMULATOR at {sim.url}")
    if stats is not None:
        print_summary(stats)
        print(f"  chunks:  {RunPaths(Path(stats['run']['dir'])).chunks_dir}")
    return code if code != EXIT_OK else 0


if __name__ == "__main__":
    sys.exit(main())
