"""The body of `POST /v1/chat/completions`: only portable OpenAI fields (`max_tokens`, `temperature`,
`seed`, `response_format`), because OpenAI itself answers 400 to an unknown field; the one llama.cpp
extension that matters to a batch, `cache_prompt`, already defaults to true (llama.cpp
tools/server/README.md, "cache_prompt ... Default: true"; llama-cpp-python 0.3.36 vendor/llama.cpp).
"""

from __future__ import annotations

from typing import Any


def response_format(schema: dict[str, Any] | str) -> dict[str, Any]:
    """OpenAI's structured-output field for a JSON schema (`"json"` means any JSON object)."""
    if schema == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def chat_body(model: str, messages: list[dict[str, str]], options: dict[str, Any],
              format: dict[str, Any] | str | None, *, stream: bool) -> dict[str, Any]:
    """The request body. `options` uses Ollama's names (the run's one vocabulary): num_predict
    becomes max_tokens; num_ctx is the server's own setting and is not sent. A streamed request
    asks for the usage chunk (`stream_options.include_usage`), the server's own token counts."""
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if options.get("num_predict") is not None:
        body["max_tokens"] = int(options["num_predict"])
    for name in ("temperature", "seed"):
        if options.get(name) is not None:
            body[name] = options[name]
    if format is not None:
        body["response_format"] = response_format(format)
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body
