"""The real Ollama for tests: a session-scoped `ollama serve` (v0.24.0 from `make ollama`) serving
`gemma3-270m` (and its damaged and poisoned twins) from the cache's model store; and `ollama_next`, the
same for v0.33.0 (llama-server engine) from `make ollama-next`.

tests/conftest.py loads this module as a plugin: request the `ollama` fixture and mark the module `ollama`
(and `slow`), or `ollama_next` and mark it `ollama_next`. `make test` runs `make ollama` first, `make
test-ollama-next` runs `make ollama-next`; without it the fixture fails with that instruction (it does not
skip: a missing server is a set-up error, not a pass). 4 slots (`OLLAMA_NUM_PARALLEL`); every
request of chunkwise sets its own num_ctx. The tests assert counts and classes, never text or speed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chunkwise.harness.ollama_server.paths import NEXT_VERSION, OllamaPaths, ollama_paths
from chunkwise.harness.ollama_server.server import RunningOllama, running_ollama

OLLAMA_PARALLEL = 4
OLLAMA_ENV = {"OLLAMA_FLASH_ATTENTION": "1"}


def require_ollama(paths: OllamaPaths | None = None) -> None:
    """Fail (not skip) with the instruction when `make ollama` (or, for v0.33.0, `make ollama-next`) has
    not run."""
    paths = paths or ollama_paths()
    if not paths.stamp.is_file():
        pytest.fail(f"the real Ollama v{paths.version} is not set up ({paths.stamp} missing): run "
                    f"`{paths.setup_command}`")


@pytest.fixture(scope="session")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOllama]:
    """A ready Ollama on a free 127.0.0.1 port; `.url` is its base URL, `.model` the model to ask for."""
    require_ollama()
    log = tmp_path_factory.mktemp("ollama") / "ollama.log"
    with running_ollama(OLLAMA_PARALLEL, log_path=log, extra_env=OLLAMA_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def ollama_next(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningOllama]:
    """The same as `ollama`, for Ollama v0.33.0."""
    paths = ollama_paths(version=NEXT_VERSION)
    require_ollama(paths)
    log = tmp_path_factory.mktemp("ollama-next") / "ollama.log"
    with running_ollama(OLLAMA_PARALLEL, paths=paths, log_path=log, extra_env=OLLAMA_ENV) as running:
        yield running
