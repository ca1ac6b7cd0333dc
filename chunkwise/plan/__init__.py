"""Chunk sizing from the context budget and the run plan `chunkwise plan` prints.

Also callable: `chunkwise.plan(...)` is the Python API's `chunkwise.api.plan` (`chunkwise.callable_package`).
"""

from chunkwise.callable_package import callable_package

callable_package(__name__)
