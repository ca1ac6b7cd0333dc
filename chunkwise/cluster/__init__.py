"""Distributed mode: shards dispatched to one Prefect worker per Ollama (issue 11)."""
