"""Prefect tasks: thin wrappers that give the logic in `chunkwise` retries, caching and names."""
