"""pytest fixtures for the Ollama simulator (import them into a test module or conftest.py).

    sim          an in-process simulator with default options (port chosen freely), stopped after the test
    sim_factory  sim_factory(options=None, *, process=False, **fields) -> SimHandle; every handle it
                 made is stopped after the test
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from chunkwise.harness.sim.harness import SimHandle, running_simulator
from chunkwise.harness.sim.options import SimOptions


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimHandle]]:
    with ExitStack() as stack:

        def make(options: SimOptions | None = None, *, process: bool = False, **fields) -> SimHandle:
            if fields:
                given = options.model_dump(exclude_unset=True) if options else {}
                options = SimOptions.model_validate({**given, **fields})
            return stack.enter_context(running_simulator(options, process=process))

        yield make


@pytest.fixture
def sim(sim_factory) -> SimHandle:
    return sim_factory()
