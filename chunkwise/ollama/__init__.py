"""The Ollama boundary: the HTTP client (raising `chunkwise.errors`), KV-cache arithmetic from `/api/show`,
and `/api/ps`."""
