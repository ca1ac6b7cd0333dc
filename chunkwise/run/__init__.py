"""The engine of a run: prepare, one chunk, one request, conversation mode, structured output, the manifest."""
