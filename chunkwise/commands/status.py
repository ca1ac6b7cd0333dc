"""`chunkwise status RUN_DIR`: where a run stands, from its directory alone (`chunkwise.results.status`)."""

from __future__ import annotations

import argparse
import json

NAME = "status"
HELP = ("Show where a run stands without the UI: requests by status and failure class, chunks checkpointed, "
        "and while it runs its rate and ETA (reads the run directory only).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run directory, e.g. runs/my-run")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def run(args: argparse.Namespace) -> int:
    from chunkwise.results.status import render, run_status

    status = run_status(args.run_dir)
    print(json.dumps(status.as_dict(), indent=2) if args.json else render(status))
    return 0
