"""`chunkwise run`: push a file of requests through an LLM server (Ollama or OpenAI-compatible)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import TYPE_CHECKING, Any

from chunkwise.commands.common import SHARED_FIELDS, add_shared_flags
from chunkwise.commands.flags import run_help, validation_line
from chunkwise.errors import SetupError

if TYPE_CHECKING:
    from chunkwise.params import RunParams

NAME = "run"
HELP = ("Run (or resume) a batch: a Parquet or OpenAI batch file of requests through Ollama or an OpenAI-compatible "
        "server in checkpointed chunks; the same command again resumes.")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add_shared_flags(parser)
    add("--output-format", choices=("parquet", "openai"),
        help=run_help("output_format", "openai: also write the Batch API output and error files beside "
                      "results.parquet", "openai for an OpenAI batch file input (.jsonl), else parquet"))
    add("--keep-alive", metavar="DURATION",
        help=run_help("keep_alive", "Ollama: how long the model stays loaded after a request (Go duration)"))
    add("--max-attempts", type=int, metavar="N",
        help=run_help("max_attempts", "attempts per request on transient failures"))
    add("--invalid-output-attempts", type=int, metavar="N",
        help=run_help("invalid_output_attempts", "attempts per request whose answer fails the --format-file schema "
                      "or ends without done (each retry warmer)"))
    add("--retry-output-truncated", action="store_true", default=None,
        help=run_help("retry_output_truncated", "retry an answer cut by num_predict once with twice the num_predict"))
    add("--think", choices=("off", "on", "low", "medium", "high"),
        help=run_help("think", "thinking models: off, on, or a level where the model takes one",
                      "off for models that can think (low for gpt-oss), not sent otherwise"))
    add("--breaker-threshold", type=int, metavar="N",
        help=run_help("breaker_threshold", "stop (exit 2, resumable) when this many different rows in a row (plus "
                      "parallel - 1) fail with the same server error or end without done (read timeouts: 2 rows); a "
                      "row's own retries count once, so one poison row is recorded failed and the run goes on"))
    add("--allow-spill", action="store_true", default=None,
        help="run even if the server puts part of the model on the CPU (default: stop before the first request)")
    add("--output-dir", metavar="DIR",
        help=run_help("output_dir", "directory for run directories", "CHUNKWISE_OUTPUT_DIR, else runs"))
    add("--run-name", metavar="NAME",
        help=run_help("run_name", "run directory name; an existing run of that name is resumed",
                      "<input stem>-<digest of the input and the options>: the same command resumes"))
    add("--new-run", action="store_true", default=None,
        help="start a fresh run beside an existing run of that name (suffixed -2, -3, ...)")
    add("--retry-failed", action="store_true", default=None,
        help="on an existing run, also re-send the requests that failed (unanswered ones are always sent)")
    add("--pool", metavar="NAME",
        help="distributed mode (--api ollama only): Prefect work pool of the shard workers (needs PREFECT_API_URL)")
    add("--shard-requests", type=int, metavar="N",
        help=run_help("shard_requests", "distributed mode: requests per shard, fixed",
                      "--shard-seconds at the hosts' measured rate"))
    add("--shard-seconds", type=float, metavar="S",
        help=run_help("shard_seconds", "distributed mode: seconds of one host's work per shard, at the rate the "
                      "run measures on its hosts"))


FIELDS = ("input_path", *SHARED_FIELDS, "output_format", "keep_alive", "max_attempts", "invalid_output_attempts",
          "retry_output_truncated", "think", "breaker_threshold", "allow_spill", "output_dir", "run_name", "new_run",
          "retry_failed", "pool", "shard_requests", "shard_seconds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_options(parser)
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def params_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunParams:
    """RunParams from flags over `base`; a one-line `SetupError` on a bad value."""
    from pydantic import ValidationError

    from chunkwise.params import RunParams
    from chunkwise.settings import get_settings

    values = {"output_dir": str(get_settings().output_dir), **(base or {})}
    values.update({f: getattr(args, f) for f in FIELDS if getattr(args, f, None) is not None})
    if getattr(args, "format_file", None):
        try:
            with open(args.format_file, encoding="utf-8") as handle:
                values["format"] = json.load(handle)
        except (OSError, ValueError) as exc:
            raise SetupError(f"--format-file {args.format_file}: {exc}; give a readable JSON schema file") from None
    try:
        return RunParams(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        flag = {"input_path": "--input", "format": "--format-file"}.get(field, "--" + field.replace("_", "-"))
        raise SetupError(validation_line(dict(err), flag if field else "")) from None


def run(args: argparse.Namespace) -> int:
    from chunkwise.commands.runner import execute, print_summary

    params = params_from_args(args)
    # with --json, stdout is the JSON document alone: the run's own lines (new or resuming, stops) go to stderr
    code, stats = execute(params, functools.partial(print, file=sys.stderr) if args.json else print)
    if stats is not None and args.json:
        print(json.dumps(stats, indent=2, default=str))
    elif stats is not None:
        print_summary(stats)
    return code
