"""`chunkwise sim`: run the Ollama simulator (a development tool, never a real Ollama server).

Flags are generated from `chunkwise.harness.sim.options.SimOptions`: one per field, `--field-name`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import typing

from pydantic import ValidationError

from chunkwise.errors import EXIT_OK, SetupError

if typing.TYPE_CHECKING:
    from chunkwise.harness.sim.options import SimOptions

NAME = "sim"
HELP = "Run the Ollama simulator: Ollama's HTTP API with modelled timing, truncation and faults (for tests and demos)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chunkwise.commands.flags import add_alias, with_default
    from chunkwise.harness.sim.options import SimOptions, flag_for

    for name, field in SimOptions.model_fields.items():
        own = "--" + name.replace("_", "-")
        flag = flag_for(name)
        default = field.default
        text = with_default(field.description or "", default)
        kwargs: dict[str, typing.Any] = {"dest": name, "default": None, "help": text}
        annotation = field.annotation
        if type(None) in typing.get_args(annotation):  # Optional[X]: the flag gives X
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        if typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif annotation in (int, float):
            kwargs["type"] = annotation
            kwargs["metavar"] = "N" if annotation is int else "X"
        elif annotation is bool:
            kwargs["type"] = _on_off
            kwargs["metavar"] = "on|off"
        else:
            kwargs["metavar"] = "MIN:MAX" if isinstance(default, tuple) else "ADDRESS" if name == "host" else "TEXT"
        parser.add_argument(flag, **kwargs)
        if flag != own:
            add_alias(parser, own, flag, name, **{k: v for k, v in kwargs.items() if k in ("type", "choices")})


def _on_off(text: str) -> bool:
    """A boolean flag's value: on/off (also true/false, yes/no, 1/0)."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on or off")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    from chunkwise.harness.sim.options import SimOptions

    given = {name: getattr(args, name) for name in SimOptions.model_fields if getattr(args, name, None) is not None}
    return SimOptions(**given)


def run(args: argparse.Namespace) -> int:
    from chunkwise.commands.flags import validation_line
    from chunkwise.harness.sim.options import flag_for

    try:
        options = options_from_args(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        raise SetupError(validation_line(dict(first), flag_for(name) if name else "")) from None
    try:
        asyncio.run(_serve(options))
    except OSError as exc:
        raise SetupError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}; "
                         "pick another --port or --bind") from None
    return EXIT_OK


async def _serve(options: SimOptions) -> None:
    from chunkwise.harness.sim.server import start_server, stop_server

    runner, url = await start_server(options)
    print(f"chunkwise sim: listening on {url}", flush=True)
    print("chunkwise sim: this is a SIMULATOR of the Ollama API (chunkwise), not a real Ollama server; "
          "responses carry X-Ollama-Simulator: chunkwise", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await stop_server(runner)
        print("chunkwise sim: stopped", flush=True)
