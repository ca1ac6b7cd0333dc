"""Every command reports an error the same way: one line `chunkwise CMD: message` on stderr, nothing
on stdout, and the exit code the error class carries (`chunkwise.errors`)."""

from __future__ import annotations

import pytest

from chunkwise.cli import main
from chunkwise.errors import EXIT_CONFIG


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--input", "x.parquet", "--num-ctx", "100"],
         "--num-ctx 100: must be greater than or equal to 256"),
        (["resume", "{tmp}/nope"], "{tmp}/nope/manifest.json does not exist; give the directory of a run started"),
        (["plan", "--input", "{tmp}/none.parquet"], "{tmp}/none.parquet: no such file; check the input path"),
        (["sample", "--rows", "0", "--out", "{tmp}/s.parquet"], "--rows 0 is out of range; give 1 to 10000000"),
        (["sim", "--parallel", "0"], "--parallel 0: must be greater than or equal to 1"),
        (["plan", "--input", "x.parquet", "--num-ctx", "100"], "--num-ctx 100: must be greater than or equal to 256"),
        (["status", "{tmp}/nope"], "{tmp}/nope/manifest.json does not exist; give the directory of a run started"),
        (["measure", "--model", "m", "--contexts", "abc"], "--contexts: 'abc' is not a positive whole number"),
        (["engine", "--parallel", "0"], "--parallel must be >= 1 and --port 1-65535"),
    ],
)
def test_every_command_reports_an_error_in_one_style(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"chunkwise {argv[0]}: {message.format(tmp=tmp_path)}")
    assert captured.err.count("\n") == 1
