"""The `chunkwise` command: one subcommand per module in `chunkwise.commands`.

Each command module exposes `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Exit codes are shared by every command (`chunkwise.errors`): 0 success, 1 finished with failed
or rejected requests, 2 bad input, configuration or an unreachable server, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Subcommands in the order `--help` lists them; each is `chunkwise.commands.<name>`.
COMMANDS = ("run", "resume", "plan", "demo", "sample", "sim", "measure", "serve", "engine")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chunkwise",
        description="Push very large LLM request sets through Ollama in context-sized, checkpointed, resumable "
        "chunks, orchestrated by Prefect. Exit codes: 0 all answered, 1 some failed or rejected, 2 bad input or "
        "configuration, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"chunkwise.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not written yet must not break the others
            if exc.name != f"chunkwise.commands.{name}":
                raise
            continue
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from chunkwise.commands.prefect_env import no_calls_home

    no_calls_home()  # before any command can start a Prefect server
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
