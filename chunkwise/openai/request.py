"""The body of `POST /v1/chat/completions`: only portable OpenAI fields (`max_tokens`, `temperature`,
`seed`, `top_p` and `stop` when a request has its own, `response_format`, and `reasoning_effort` when a
run asks for thinking levels), because OpenAI
itself answers 400 to an unknown field (`chat_template_kwargs` is sent only to llama-server, which reads
it: `chunkwise.openai.thinking`); the one llama.cpp extension that matters to a batch, `cache_prompt`,
already defaults to true (llama.cpp tools/server/README.md, "cache_prompt ... Default: true";
llama-cpp-python 0.3.36 vendor/llama.cpp).
"""

from __future__ import annotations

from typing import Any

from chunkwise.backend import ChatRequest


def response_format(schema: dict[str, Any] | str) -> dict[str, Any]:
    """OpenAI's structured-output field for a JSON schema (`"json"` means any JSON object)."""
    if schema == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def chat_body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The request body. The neutral options in OpenAI's names (`max_tokens`); the context per slot is
    the server's own setting and is not sent. A streamed request asks for the usage chunk
    (`stream_options.include_usage`), the server's own token counts. The backend's own fields
    (`extras`: `reasoning_effort`, `chat_template_kwargs`) go in as they are."""
    o = request.options
    body: dict[str, Any] = {"model": request.model, "messages": request.messages, "stream": stream,
                            "max_tokens": int(o.max_answer_tokens), "temperature": o.temperature, "seed": o.seed}
    if o.top_p is not None:
        body["top_p"] = o.top_p
    if o.stop:
        body["stop"] = list(o.stop)
    if request.format is not None:
        body["response_format"] = response_format(request.format)
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(request.extras)
    return body
