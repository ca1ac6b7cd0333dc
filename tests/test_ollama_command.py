"""`chunkwise ollama --ollama-version V`: which built Ollama it serves, and the one line when that version
has not been built (naming the make target that builds it)."""

from __future__ import annotations

import argparse

import pytest

from chunkwise.commands import ollama
from chunkwise.errors import SetupError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ollama.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_version_defaults_to_the_one_make_test_builds_and_is_one_of_the_built_ones(capsys) -> None:
    assert parse().ollama_version == "0.24.0"
    assert parse("--ollama-version", "0.33.0").ollama_version == "0.33.0"
    with pytest.raises(SystemExit):
        parse("--ollama-version", "0.30.0")
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(("version", "target"), [("0.24.0", "make ollama"), ("0.33.0", "make ollama-next")])
def test_a_version_not_built_names_its_make_target(tmp_path, monkeypatch, version, target) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(SetupError, match=rf"no Ollama v{version} built in .*run `{target}` first"):
        ollama.run(parse("--ollama-version", version))
