"""`chunkwise resume RUN_DIR`: continue a stopped or failed run with its recorded parameters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chunkwise.errors import SetupError

NAME = "resume"
HELP = "Resume a run from its directory (its manifest holds the parameters)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run directory, e.g. runs/my-run")
    parser.add_argument("--retry-failed", action="store_true", default=None,
                        help="also re-send the requests that failed (unanswered ones are always sent)")
    parser.add_argument("--host", metavar="URL", help="the server's base URL, if it moved (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    from chunkwise.commands.run import params_from_args
    from chunkwise.commands.runner import execute, print_summary
    from chunkwise.store.files import read_json
    from chunkwise.store.layout import RunPaths

    manifest_path = RunPaths(Path(args.run_dir)).manifest
    if not manifest_path.is_file():
        raise SetupError(f"{manifest_path} does not exist; give the directory of a run started with `chunkwise run`")
    manifest = read_json(manifest_path)
    base = dict(manifest["params"], input_path=manifest["input_path"])
    base.update(output_dir=str(Path(args.run_dir).resolve().parent), run_name=Path(args.run_dir).resolve().name,
                new_run=False, retry_failed=False)
    params = params_from_args(argparse.Namespace(retry_failed=args.retry_failed, host=args.host), base)
    code, stats = execute(params, command="resume")
    if stats is not None and args.json:
        print(json.dumps(stats, indent=2, default=str))
    elif stats is not None:
        print_summary(stats)
    return code
