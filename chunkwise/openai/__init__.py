"""The OpenAI-compatible boundary: the HTTP client for `/v1/chat/completions` and `/v1/models`."""
