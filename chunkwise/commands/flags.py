"""Conventions every command's flags share (`chunkwise COMMAND --help`):

- one name per concept across subcommands: `--host` is the URL of the LLM server a command talks to,
  `--bind` the address a server chunkwise starts listens on, `--num-ctx` the context of one server slot
  (tokens), `--parallel` the slots, `--prefill-tps`/`--decode-tps` a whole server's rate and
  `--slot-prefill-tps`/`--slot-decode-tps` one slot's;
- every option has help, and the help of an option with a default ends with `(default: X)`, the
  default read from the model that owns it (`RunParams`, `SimOptions`), so it cannot go stale;
- an old spelling is kept as a hidden alias (`add_alias`) that still works and prints one line on
  stderr saying what to write instead.

Only the standard library at import time: `chunkwise --help` builds every parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def shown(value: Any) -> str:
    """A default as `--help` shows it: booleans as on/off, None as 'none', tuples as MIN:MAX."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ":".join(map(str, value))
    return str(value)


def with_default(text: str, value: Any) -> str:
    """`text (default: value)`, with argparse's `%` escaped."""
    return f"{text} (default: {shown(value)})".replace("%", "%%")


def run_default(field: str) -> Any:
    """The default of a `RunParams` field (what a run uses when the flag is left out)."""
    from chunkwise.params import RunParams

    return RunParams.model_fields[field].default


def run_help(field: str, text: str, default: Any = ...) -> str:
    """Help for a flag that sets a `RunParams` field: `text (default: <the field's default>)`; `default`
    replaces a default that needs words (an empty field that means something)."""
    value = run_default(field) if default is ... else default
    return text.replace("%", "%%") if value is None else with_default(text, value)


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: sets the new flag's destination (through `convert`) and prints one
    line saying what to write instead. Hidden from `--help`."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str,
                 convert: Callable[[Any], Any] | None = None, note: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new, self.convert, self.note = new, convert, note

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        value = self.const if self.nargs == 0 else values
        print(f"chunkwise: {option_string} is deprecated; write {self.new}{self.note}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, self.convert(value) if self.convert else value)


def add_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, *, flag: bool = False,
              convert: Callable[[Any], Any] | None = None, note: str = "", **kwargs: Any) -> None:
    """Keep `old` working as a hidden alias of `new` (which sets `dest`); `flag` for an option that takes
    no value (it then stores True)."""
    if flag:
        kwargs.update(nargs=0, const=True)
    parser.add_argument(old, action=DeprecatedAlias, dest=dest, new=new, convert=convert, note=note,
                        default=argparse.SUPPRESS, **kwargs)


def validation_line(error: dict[str, Any], flag: str) -> str:
    """One line for a pydantic error on the option `flag` (RunParams, SimOptions): `--flag VALUE: must be ...`,
    the value as given; a chunkwise validator's own message already quotes it."""
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if message.startswith("Input should be "):  # pydantic's word reads like the --input flag
        message = "must be " + message.removeprefix("Input should be ")
    if not flag:
        return message
    if error.get("type") == "value_error":
        return f"{flag}: {message}"
    return f"{flag} {error.get('input')!r}: {message}"
