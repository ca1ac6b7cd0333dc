"""chunkwise: large LLM request sets through Ollama or any OpenAI-compatible server in context-sized,
checkpointed, resumable chunks.

The Python API: `chunkwise.run(...)` and `chunkwise.plan(...)` (`chunkwise.api`: the same parameters as the
`chunkwise run` and `chunkwise plan` commands, as a `RunParams` or its fields as keywords).
"""

__version__ = "0.1.0"

# the callable packages (chunkwise.callable_package): `chunkwise.run(...)` works after a plain `import chunkwise`
from chunkwise import plan as plan
from chunkwise import run as run
