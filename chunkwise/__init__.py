"""chunkwise: large LLM request sets through Ollama in context-sized, checkpointed chunks."""

__version__ = "0.1.0"
