"""`chunkwise prefect ARGS...`: Prefect's own CLI, run with chunkwise's process environment.

That is: the Prefect credential of CHUNKWISE_PREFECT_AUTH_FILE in PREFECT_API_AUTH_STRING (every
client command: work pools, deployments, `worker start`) and PREFECT_SERVER_API_AUTH_STRING (`server
start`), Prefect's analytics off (`chunkwise.commands.prefect_env`), and the private umask of
`file_mode` (the server's SQLite database, its logs). `make server` and the loopback cluster start
their servers this way. `server start` on an address other hosts can reach is refused without a
credential: an open Prefect server lets anyone who reaches it start flow runs with parameters of
their choosing and read every log. Options for Prefect itself go after `--`:
`chunkwise prefect -- --no-prompt deploy --all`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from chunkwise.errors import SetupError

NAME = "prefect"
HELP = ("Run Prefect's CLI with the credential of CHUNKWISE_PREFECT_AUTH_FILE, no calls home and private files "
        "(e.g. `chunkwise prefect server start`); refuses an unauthenticated server on a non-loopback address.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the `prefect` command")


def server_host(args: list[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The address `prefect server start` would bind, or None when `args` is not that command."""
    if args[:2] != ["server", "start"]:
        return None
    host = environ.get("PREFECT_SERVER_API_HOST") or "127.0.0.1"
    for i, arg in enumerate(args):
        if arg == "--host" and i + 1 < len(args):
            host = args[i + 1]
        elif arg.startswith("--host="):
            host = arg.split("=", 1)[1]
    return host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def run(args: argparse.Namespace) -> int:
    argv = list(args.args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    host = server_host(argv)
    if host is not None and not is_loopback(host) and not os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        raise SetupError(f"refusing to start a Prefect server on {host} without authentication: anyone who reaches "
                         "it could start flow runs and read every log; set CHUNKWISE_PREFECT_AUTH_FILE to a file "
                         "holding user:password (or bind --host 127.0.0.1)")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "prefect", *argv])
