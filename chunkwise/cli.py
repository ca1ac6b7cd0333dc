"""The `chunkwise` command: one subcommand per module in `chunkwise.commands`.

Each command module exposes `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
A command reports a problem by raising a `chunkwise.errors.ChunkwiseError` (a `SetupError` for
anything the user must fix first); `main` prints it in the one style every command shares,
`chunkwise CMD: message` on stderr, and exits with the error's `exit_code`: 0 success, 1 finished
with failed or rejected requests, 2 bad input, configuration or an unreachable server, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from chunkwise.errors import ChunkwiseError

#: Subcommands in the order `--help` lists them; each is `chunkwise.commands.<name>`.
COMMANDS = ("run", "resume", "status", "plan", "demo", "sample", "sim", "measure", "serve", "engine", "ollama",
            "worker", "prefect")


def fail(command: str, message: str) -> None:
    """The one error printer: `chunkwise CMD: message` on stderr (stdout stays for results)."""
    print(f"chunkwise {command}: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    from chunkwise import __version__

    parser = argparse.ArgumentParser(
        prog="chunkwise",
        description="Push very large LLM request sets (Parquet or OpenAI batch files) through Ollama or any "
        "OpenAI-compatible server in context-sized, checkpointed, resumable chunks, orchestrated by Prefect. "
        "Exit codes: 0 all answered, 1 some failed or rejected, 2 bad input or configuration, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"chunkwise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"chunkwise.commands.{name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def secure_process() -> None:
    """Before any command runs: the settings read (a bad value is one line), the process umask from
    `file_mode` (what this process and its children create is private), the Prefect credential from
    its file into the environment (`chunkwise.prefect_auth`)."""
    from pydantic import ValidationError

    from chunkwise.errors import SetupError
    from chunkwise.prefect_auth import load_credential
    from chunkwise.settings import get_settings
    from chunkwise.store.files import apply_umask

    try:
        settings = get_settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "CHUNKWISE_" + "_".join(str(p) for p in err["loc"]).upper()
        raise SetupError(f"{name}: {err['msg']}; fix or unset it") from None
    apply_umask()
    load_credential(settings.prefect_auth_file, group_readable_ok=settings.file_mode == "group")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from chunkwise.commands.prefect_env import no_calls_home

    no_calls_home()  # before any command can start a Prefect server
    try:
        secure_process()
        return int(args._run(args) or 0)
    except ChunkwiseError as exc:
        fail(args.command, str(exc))
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
