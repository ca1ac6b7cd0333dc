"""chunkwise.logs.logger: the run logger only once Prefect's context module is complete.

`chunkwise run` imports Prefect in a background thread while the main thread runs the preflight
(commands/early_api.py); a logger call on the main thread must not import Prefect half-way through
that import (Python hands out the partially initialized module and Prefect printed "Failed to
initialize plugins: cannot import name 'SettingsContext' ...").
"""

from __future__ import annotations

import logging
import sys
import types
from importlib.machinery import ModuleSpec

import pytest

from chunkwise.logs import logger

pytestmark = pytest.mark.pure


def test_a_half_imported_prefect_context_gives_the_plain_logger_without_importing(monkeypatch):
    half = types.ModuleType("prefect.context")  # as during its import: no classes defined yet
    half.__spec__ = ModuleSpec("prefect.context", None)
    half.__spec__._initializing = True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect", types.ModuleType("prefect"))  # the package half-way too
    monkeypatch.setitem(sys.modules, "prefect.context", half)
    monkeypatch.delitem(sys.modules, "prefect.logging", raising=False)
    got = logger("chunkwise.test")
    assert got is logging.getLogger("chunkwise.test")
    assert "prefect.logging" not in sys.modules  # nothing imported while the other thread holds it


def test_without_prefect_loaded_the_plain_logger(monkeypatch):
    monkeypatch.delitem(sys.modules, "prefect.context", raising=False)
    assert logger("chunkwise.test") is logging.getLogger("chunkwise.test")


def test_inside_a_task_run_context_the_run_logger(monkeypatch):
    from prefect import context as prefect_context

    sentinel = logging.LoggerAdapter(logging.getLogger("run"), {})
    monkeypatch.setattr(prefect_context.TaskRunContext, "get", classmethod(lambda cls: object()))
    monkeypatch.setattr("prefect.logging.get_run_logger", lambda: sentinel)
    assert logger("chunkwise.test") is sentinel
    monkeypatch.setattr(prefect_context.TaskRunContext, "get", classmethod(lambda cls: None))
    assert logger("chunkwise.test") is logging.getLogger("chunkwise.test")
