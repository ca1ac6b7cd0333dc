"""One name per concept across the subcommands, help for every option with its default, old spellings kept as
hidden aliases that print one deprecation line, and `chunkwise --version` (issue 21 items 2 and 3)."""

from __future__ import annotations

import argparse
import re

import pytest

from chunkwise import __version__
from chunkwise.cli import COMMANDS, build_parser, main
from chunkwise.commands.flags import shown
from chunkwise.params import RunParams


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def visible_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


def test_every_option_of_every_command_has_help():
    parsers = subparsers()
    assert set(parsers) == set(COMMANDS)
    missing = [f"{name} {' '.join(a.option_strings) or a.dest}" for name, p in parsers.items() for a in p._actions
               if a.help in (None, "")]
    assert missing == []


@pytest.mark.parametrize("command", ["run", "plan"])
def test_run_and_plan_help_shows_every_default_from_run_params(command):
    """Each flag that sets a RunParams field says its default, and the default it says is the field's own."""
    options = visible_options(subparsers()[command])
    checked = 0
    for field, info in RunParams.model_fields.items():
        flag = "--" + field.replace("_", "-")
        action = options.get(flag)
        if action is None or info.default in (None, "") or isinstance(info.default, bool):
            continue
        said = re.search(r"\(default: (.*)\)$", " ".join(action.help.split()))
        assert said and shown(info.default) in said.group(1), flag
        assert action.default is None, flag  # left out, the flag leaves the field (or a resumed run's value) alone
        checked += 1
    assert checked >= 12
    for flag in ("--chunk-token-budget", "--trim-threshold", "--mode", "--temperature", "--seed", "--limit",
                 "--id-column", "--prompt-column"):
        assert flag in options


def test_the_defaults_are_the_first_run_defaults():
    """independent mode, a context most models accept, parallel as llama-server's default slots (README "Defaults")."""
    p = RunParams(input_path="x.parquet")
    assert (p.mode, p.num_ctx, p.parallel, p.num_predict) == ("independent", 8192, 4, 512)


def test_one_name_per_concept():
    parsers = subparsers()
    for command in ("run", "plan", "resume", "measure", "worker"):  # the URL of the LLM server a command talks to
        assert "--host" in visible_options(parsers[command]), command
    assert "--bind" in visible_options(parsers["sim"]) and "--host" not in visible_options(parsers["sim"])
    for command, parser in parsers.items():
        options = visible_options(parser)
        assert not {"--ollama-host", "--ctx"} & set(options), command
        if "--num-ctx" in options:  # always the context of one slot
            assert "slot" in options["--num-ctx"].help or command == "ollama", command
    assert {"--slot-prefill-tps", "--slot-decode-tps"} <= set(visible_options(parsers["sim"]))
    assert "whole server" in visible_options(parsers["plan"])["--prefill-tps"].help
    assert "--local-engine" in visible_options(parsers["measure"])
    assert "--json" in visible_options(parsers["resume"]) and "--json" in visible_options(parsers["status"])


@pytest.mark.parametrize(("argv", "dest", "value", "line"), [
    (["worker", "--pool", "p", "--ollama-host", "http://h:1"], "ollama_host", "http://h:1",
     "chunkwise: --ollama-host is deprecated; write --host"),
    (["sim", "--host", "0.0.0.0"], "host", "0.0.0.0", "chunkwise: --host is deprecated; write --bind"),
    (["sim", "--prefill-tps", "900"], "prefill_tps", 900.0,
     "chunkwise: --prefill-tps is deprecated; write --slot-prefill-tps"),
    (["sim", "--seed", "4"], "seed", 4, "chunkwise: --seed is deprecated; write --fault-seed"),
    (["measure", "--api", "openai"], "local_engine", True,
     "chunkwise: --api is deprecated; write --local-engine (for --api openai)"),
    (["engine", "--ctx", "8192"], "total_ctx", 8192,
     "chunkwise: --ctx is deprecated; write --num-ctx (per slot: the old --ctx / --parallel)"),
])
def test_old_spellings_still_work_and_print_one_line(capsys, argv, dest, value, line):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err.splitlines() == [line]


def test_the_new_spellings_print_nothing(capsys):
    args = build_parser().parse_args(["sim", "--bind", "127.0.0.2", "--slot-decode-tps", "5", "--fault-seed", "3"])
    assert (args.host, args.decode_tps, args.seed) == ("127.0.0.2", 5.0, 3)
    assert capsys.readouterr().err == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"chunkwise {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
