"""The engine of a run: prepare, one chunk, one request, conversation mode, structured output, the manifest.

Also callable: `chunkwise.run(...)` is the Python API's `chunkwise.api.run` (`chunkwise.callable_package`).
"""

from chunkwise.callable_package import callable_package

callable_package(__name__)
