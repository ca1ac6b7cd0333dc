"""Chunk sizing from the context budget and the run plan `chunkwise plan` prints."""
