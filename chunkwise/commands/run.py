"""`chunkwise run`: push a Parquet file of requests through Ollama."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from chunkwise.commands.common import SHARED_FIELDS, add_shared_flags
from chunkwise.errors import SetupError

if TYPE_CHECKING:
    from chunkwise.params import RunParams

NAME = "run"
HELP = "Run (or resume) a batch: Parquet requests through Ollama in checkpointed chunks."


def add_run_options(parser: argparse.ArgumentParser, *, input_required: bool = True) -> None:
    add = parser.add_argument
    add("--input", dest="input_path", required=input_required,
        help="Parquet file with id and prompt columns, or an OpenAI Batch API input file (.jsonl)")
    add_shared_flags(parser)
    add("--api", choices=("ollama", "openai"),
        help="server API: ollama (/api/chat, default) or openai (/v1/chat/completions: llama-server, vLLM, ...)")
    add("--output-format", choices=("parquet", "openai"),
        help="openai: also write the Batch API output and error files beside results.parquet")
    add("--temperature", type=float)
    add("--seed", type=int)
    add("--keep-alive", help="Go duration, e.g. 30m")
    add("--format-file", help="JSON schema file the answers must follow")
    add("--max-attempts", type=int, help="attempts per request on transient failures")
    add("--invalid-output-attempts", type=int, help="attempts per request whose answer fails the --format-file schema")
    add("--retry-output-truncated", action="store_true", default=None,
        help="retry an answer cut by num_predict once with twice the num_predict")
    add("--think", choices=("off", "on", "low", "medium", "high"),
        help="thinking models: off (default for models that can think), on, or a level where the model takes one")
    add("--breaker-threshold", type=int,
        help="stop (exit 2, resumable) after this many consecutive requests fail with the same server error "
        "(default 5)")
    add("--output-dir", help="directory for run directories (default runs)")
    add("--run-name", help="run directory name; an existing one is resumed")
    add("--new-run", action="store_true", default=None, help="start fresh beside an existing run of that name")
    add("--retry-failed", action="store_true", default=None, help="re-send only the requests that failed")
    add("--pool", help="distributed mode: Prefect work pool of the shard workers (needs PREFECT_API_URL)")
    add("--shard-requests", type=int, metavar="N", help="distributed mode: requests per shard (default 900)")


FIELDS = ("input_path", *SHARED_FIELDS, "api", "output_format", "temperature", "seed", "keep_alive", "max_attempts",
          "invalid_output_attempts", "retry_output_truncated", "think", "breaker_threshold", "output_dir", "run_name",
          "new_run", "retry_failed", "pool", "shard_requests")


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
        where = f"--{field.replace('_', '-')}: " if field else ""
        # chunkwise's own validators already quote the value; pydantic's bound checks do not
        message = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] == "value_error" else f" (got {err.get('input')!r})"
        raise SetupError(f"{where}{message}{got}") from None


def run(args: argparse.Namespace) -> int:
    from chunkwise.commands.runner import execute, print_summary

    params = params_from_args(args)
    code, stats = execute(params)
    if stats is not None and args.json:
        print(json.dumps(stats, indent=2, default=str))
    elif stats is not None:
        print_summary(stats)
    return code
