"""The real engine for tests: a session-scoped llama-server with Gemma 3 270M.

tests/conftest.py loads this module as a plugin: request the `engine` fixture and mark the module
`engine` (and `slow`). The engine is built by `make engine`, which `make test` runs
first; without it the fixture fails with that instruction (it does not skip: a missing engine is a
set-up error, not a pass). 4 slots x 2048 tokens each, with flash attention (`-fa on`, `ENGINE_EXTRA`):
the tests assert counts and classes, never text or speed, and on 2 CPU cores it answered 200 requests
(4 slots, in the heavy lock, 2026-11-28) of 4 tokens in 43.5 s against 50.8 s without, of 16 tokens
in 79 s against 115 s.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chunkwise.harness.llama_server.build import binary_works
from chunkwise.harness.llama_server.paths import engine_paths
from chunkwise.harness.llama_server.server import RunningEngine, running_engine

ENGINE_PARALLEL = 4
ENGINE_CTX = 8192
#: llama-server flags beyond `chunkwise.harness.llama_server.server`'s own.
ENGINE_EXTRA = ("-fa", "on")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    """A ready llama-server on a free 127.0.0.1 port; `.url` is its base URL (append /v1 for OpenAI)."""
    paths = engine_paths()
    if not binary_works(paths.server) or not paths.model.is_file():
        pytest.fail(f"the real engine is not set up ({paths.server}, {paths.model}): run `make engine`")
    log = tmp_path_factory.mktemp("engine") / "llama-server.log"
    with running_engine(ENGINE_PARALLEL, ENGINE_CTX, log_path=log, paths=paths, extra=ENGINE_EXTRA) as running:
        yield running
