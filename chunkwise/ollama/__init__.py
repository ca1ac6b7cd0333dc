"""The Ollama boundary: the HTTP client and its errors, KV-cache arithmetic from `/api/show`, `/api/ps`."""
