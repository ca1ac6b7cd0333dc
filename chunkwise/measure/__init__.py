"""`chunkwise measure`: what one context token really costs in memory, measured on a server."""
