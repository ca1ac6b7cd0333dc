"""`chunkwise.run(...)` and `chunkwise.plan(...)` are the Python API's functions (`chunkwise.api`), while
`chunkwise.run` and `chunkwise.plan` are also the packages that hold a run's and a plan's code. A package is a
module object, so each of the two makes itself callable (`callable_package`), forwarding a call to its
function. Nothing is imported until the call: importing the packages stays as cheap as before."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    """A package whose call is `chunkwise.api.<the package's last name>`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        function = getattr(importlib.import_module("chunkwise.api"), self.__name__.rsplit(".", 1)[-1])
        return function(*args, **kwargs)


def callable_package(name: str) -> None:
    """Make the package `name` (its `__name__`) callable as its `chunkwise.api` function."""
    sys.modules[name].__class__ = _CallablePackage
