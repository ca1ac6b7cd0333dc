"""OpenAI's POST /v1/chat/completions and GET /v1/models, as Ollama's middleware serves them.

Ollama binds the OpenAI body (400 `invalid_request_error` with encoding/json's text; `[] is too short -
'messages'` for no messages), rewrites it as an /api/chat request and runs the chat handler, whose
answer a writer converts (`v0.24.0:middleware/openai.go:408-446`, `openai/openai.go:477-658`):
`max_tokens` becomes `num_predict`, temperature and top_p default to 1.0, `response_format` json_object /
json_schema becomes `format`, `reasoning_effort` becomes `think`. The simulator does the same by sending
the rewritten body to its own /api/chat. Answers (`openai/openai.go:262-351`): one `chat.completion`
object (`system_fingerprint` "fp_ollama", `usage` from the token counts), or with `stream` one SSE
`data:` line per NDJSON line (`chat.completion.chunk`, delta with role and content, `finish_reason`
null until the last) and `data: [DONE]`; from 0.32.15 (`era.py` openai_finish_chunk) the role only in
the first chunk and the finish reason on a last chunk of its own with an empty delta. A non-200 from the
chat handler is rewritten as `{"error": {"message", "type", "param": null, "code": null}}` with the type by status (400
invalid_request_error, 404 not_found_error, else api_error; `openai.go:218-230`) and Content-Type
`application/json` (`middleware/openai.go:58-72`).
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from chunkwise.harness.sim.gojson import BindError, Field, bind, decode
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.harness.sim.state import STATE

EFFORTS = ("high", "medium", "low", "max", "none")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


REQUEST_FIELDS: dict[str, Field] = {
    "model": ("string", lambda v: isinstance(v, str)), "messages": ("[]openai.Message", lambda v: isinstance(v, list)),
    "stream": ("bool", lambda v: isinstance(v, bool)), "max_tokens": ("int", lambda v: isinstance(v, int)),
    "seed": ("int", lambda v: isinstance(v, int)), "temperature": ("float64", _num), "top_p": ("float64", _num),
    "frequency_penalty": ("float64", _num), "presence_penalty": ("float64", _num),
    "response_format": ("openai.ResponseFormat", lambda v: isinstance(v, dict)),
    "reasoning_effort": ("string", lambda v: isinstance(v, str)),
}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _bad_request(request: web.Request, message: str) -> web.Response:
    return request.app[STATE].json(request.path, 400, error_body(400, message))


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The /api/chat request Ollama makes of an OpenAI one (`openai/openai.go:477-658`); ValueError on a
    reasoning effort it does not know."""
    options: dict[str, Any] = {}
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = [s for s in stop if isinstance(s, str)]
    if body.get("max_tokens") is not None:
        options["num_predict"] = body["max_tokens"]
    options["temperature"] = body["temperature"] if body.get("temperature") is not None else 1.0
    if body.get("seed") is not None:
        options["seed"] = body["seed"]
    options["top_p"] = body["top_p"] if body.get("top_p") is not None else 1.0
    out: dict[str, Any] = {"model": body.get("model") or "", "options": options,
                           "stream": bool(body.get("stream")),
                           "messages": [{"role": m.get("role", ""), "content": _text(m.get("content"))}
                                        for m in body.get("messages") or [] if isinstance(m, dict)]}
    fmt = body.get("response_format") or {}
    kind = str(fmt.get("type") or "").strip().lower()
    if kind == "json_object":
        out["format"] = "json"
    elif kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        out["format"] = fmt["json_schema"].get("schema")
    effort = (body.get("reasoning") or {}).get("effort") or body.get("reasoning_effort")
    if effort:
        if effort not in EFFORTS:
            raise ValueError(f"invalid reasoning value: '{effort}' "
                             '(must be "high", "medium", "low", "max", or "none")')
        out["think"] = False if effort == "none" else effort
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _choice_message(answer: dict[str, Any]) -> dict[str, Any]:
    message = answer.get("message") or {}
    out = {"role": message.get("role", "assistant"), "content": message.get("content", "")}
    if message.get("thinking"):
        out["reasoning"] = message["thinking"]
    return out


def _usage(answer: dict[str, Any]) -> dict[str, int]:
    prompt, completion = answer.get("prompt_eval_count", 0), answer.get("eval_count", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _created(answer: dict[str, Any]) -> int:
    stamp = str(answer.get("created_at", ""))
    try:
        return int(datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp())
    except ValueError:
        return int(time.time())


def completion_object(chat_id: str, answer: dict[str, Any]) -> dict[str, Any]:
    return {"id": chat_id, "object": "chat.completion", "created": _created(answer), "model": answer.get("model"),
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": _choice_message(answer),
                         "finish_reason": answer.get("done_reason") or None}],
            "usage": _usage(answer)}


def chunk_object(chat_id: str, answer: dict[str, Any]) -> dict[str, Any]:
    return {"id": chat_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": answer.get("model"), "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": _choice_message(answer),
                         "finish_reason": answer.get("done_reason") or None}]}


def finish_object(chat_id: str, answer: dict[str, Any]) -> dict[str, Any]:
    """The chunk that ends a stream from 0.32.15: empty delta, the finish reason (`stop` when none;
    `v0.33.0:openai/openai.go:369-395` FinishChunk)."""
    return {"id": chat_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": answer.get("model"), "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": {}, "finish_reason": answer.get("done_reason") or "stop"}]}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = bind(decode(await request.read()), "ChatCompletionRequest", REQUEST_FIELDS)
    except BindError as exc:
        return _bad_request(request, str(exc))
    if not body.get("messages"):
        return _bad_request(request, "[] is too short - 'messages'")
    try:
        chat = chat_body(body)
    except ValueError as exc:
        return _bad_request(request, str(exc))
    chat_id = f"chatcmpl-{random.randrange(999)}"
    url = f"{request.scheme}://{request.host}/api/chat"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session, \
            session.post(url, json=chat) as inner:
        if inner.status != 200:
            message = (await inner.json(content_type=None)).get("error", "")
            state.stats.record(request.path, inner.status)
            data = json.dumps(error_body(inner.status, message)) + "\n"
            return web.Response(status=inner.status, body=data.encode(),
                                headers={"Content-Type": "application/json"})
        if not chat["stream"]:
            state.stats.record(request.path, 200)
            data = json.dumps(completion_object(chat_id, await inner.json(content_type=None))) + "\n"
            return web.Response(body=data.encode(), headers={"Content-Type": "application/json"})
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        finish_chunk = request.app[STATE].options.era.openai_finish_chunk
        first = True
        async for raw_line in inner.content:
            if not raw_line.strip():
                continue
            answer = json.loads(raw_line)
            if "error" in answer:
                await response.write(f"data: {json.dumps(error_body(500, answer['error']))}\n\n".encode())
                break
            if not finish_chunk:
                await response.write(f"data: {json.dumps(chunk_object(chat_id, answer))}\n\n".encode())
            else:  # from 0.32.15: role in the first chunk only, no empty trailer, finish_reason on its own chunk
                empty = not (answer.get("message") or {}).get("content") and not (answer.get("message") or {}).get(
                    "thinking")
                if not (answer.get("done") and empty and not first):
                    chunk = chunk_object(chat_id, {**answer, "done_reason": None})
                    if not first:
                        del chunk["choices"][0]["delta"]["role"]
                    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    first = False
                if answer.get("done"):
                    await response.write(f"data: {json.dumps(finish_object(chat_id, answer))}\n\n".encode())
            if answer.get("done"):
                await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        state.stats.record(request.path, 200)
        return response


async def models(request: web.Request) -> web.Response:
    """GET /v1/models: the models of /api/tags (`openai/openai.go:408-425`)."""
    data = [{"id": p.name, "object": "model", "created": _created({"created_at": p.modified_at}), "owned_by": "library"}
            for p in sorted(PROFILES.values(), key=lambda p: p.modified_at, reverse=True)]
    return web.Response(body=json.dumps({"object": "list", "data": data}).encode(),
                        headers={"Content-Type": "application/json"})
