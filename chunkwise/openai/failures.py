"""How an OpenAI-compatible server says a request failed, mapped onto `chunkwise.errors`' one tree:

    400 with llama.cpp `exceed_context_size_error`, OpenAI/llama-cpp-python `context_length_exceeded`
        or vLLM "maximum context length"             -> ContextExceeded (the request's failure, recorded)
    401/403 (bad or missing API key), 429 insufficient_quota  -> FatalError (stop the run)
    404                                               -> ModelNotFound
    the rest: the shared ladder `chunkwise.transport.classify_status` (429, 5xx -> ServerError; 503, llama.cpp
        `unavailable_error` while loading -> ServerBusy; both retried; other 4xx -> BadRequest)
    an error object inside a 200 stream               -> ContextExceeded or ServerError (`stream_error`)
"""

from __future__ import annotations

from typing import Any

import orjson

from chunkwise.errors import ContextExceeded, FatalError, LLMError, ModelNotFound, ServerError
from chunkwise.transport import classify_status

#: Phrases by which each server says a prompt does not fit its context (all HTTP 400).
CONTEXT_TYPES = ("exceed_context_size_error",)  # llama.cpp server-common.cpp format_error_response
CONTEXT_CODES = ("context_length_exceeded",)  # OpenAI; llama-cpp-python 0.3.36
CONTEXT_PHRASES = ("maximum context length", "exceeds the available context size")  # vLLM; llama.cpp


def error_fields(body: bytes) -> dict[str, Any]:
    """The error object of a response body, whatever its shape: `{"error": {...}}` (OpenAI,
    llama.cpp, vLLM >= 0.6), `{"error": "text"}`, or vLLM's older bare `{"object": "error", ...}`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body.decode("utf-8", "replace")[:500]}
    if not isinstance(data, dict):
        return {"message": str(data)[:500]}
    error = data.get("error", data)
    if isinstance(error, dict):
        return error
    return {"message": str(error)}


def is_context_error(fields: dict[str, Any]) -> bool:
    message = str(fields.get("message") or "").lower()
    return (fields.get("type") in CONTEXT_TYPES or fields.get("code") in CONTEXT_CODES
            or any(phrase in message for phrase in CONTEXT_PHRASES))


def context_message(fields: dict[str, Any]) -> str:
    message = str(fields.get("message") or "the prompt does not fit the server's context")
    if "n_prompt_tokens" in fields and "n_ctx" in fields:  # llama.cpp adds its own numbers
        return (f"prompt of {fields['n_prompt_tokens']} tokens exceeds the server's context of {fields['n_ctx']} "
                f"tokens per slot ({message})")
    return message


def error_from_response(status: int, fields: dict[str, Any], model: str) -> LLMError:
    """The failure an HTTP error response means; `fields` from `error_fields`."""
    message = str(fields.get("message") or f"HTTP {status}")
    if is_context_error(fields):
        return ContextExceeded(context_message(fields), status)
    if status in (401, 403):
        return FatalError(f"{message} (status {status}); set the server's API key in CHUNKWISE_API_KEY", status)
    if status == 404:
        return ModelNotFound(f"{message} (status 404); check that the server serves model {model!r} "
                             "(GET /v1/models lists them) and that --host is the server's base URL", status)
    if status == 429 and fields.get("code") == "insufficient_quota":
        return FatalError(f"{message} (status 429); the account's quota is used up", status)
    return classify_status(status, message)


def stream_error(error: object) -> LLMError:
    """The failure an `error` event inside a 200 stream means (an error after the stream started)."""
    fields = error if isinstance(error, dict) else {"message": str(error)}
    if is_context_error(fields):
        return ContextExceeded(context_message(fields), 200)
    return ServerError(f"{fields.get('message') or fields} (in stream)", 200)
