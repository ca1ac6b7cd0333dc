"""The OpenAI-compatible boundary: SSE parsing, usage, and every error mapping, against
httpx.MockTransport. Error bodies are the shapes the servers send (cited in chunkwise.openai.client)."""

import json
import pickle

import httpx
import pytest

from chunkwise import errors as e
from chunkwise.openai import client as oc
from tests.support.backends import request

MESSAGES = [{"role": "user", "content": "hi"}]


def client_for(handler, stream=True, api_key=None):
    return oc.OpenAIClient("http://engine.test:8080", stream=stream, api_key=api_key,
                           transport=httpx.MockTransport(handler))


def sse(*events, done=True):
    text = "".join(f"data: {json.dumps(ev)}\n\n" for ev in events)
    return (text + ("data: [DONE]\n\n" if done else "")).encode()


def delta(content=None, finish=None):
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]}


USAGE = {"object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24,
                   "prompt_tokens_details": {"cached_tokens": 5}},
         "timings": {"prompt_ms": 12.5, "predicted_ms": 40.0}}


def test_stream_is_assembled_with_usage_and_timings():
    seen = {}

    def handler(request):
        seen.update(json.loads(request.content))
        seen["path"] = request.url.path
        return httpx.Response(200, content=sse(delta("Hel"), delta("lo"), delta(None, "stop"), USAGE))

    result = client_for(handler).chat(request("m", MESSAGES, num_ctx=2048, num_predict=16, temperature=0.0, seed=7))
    assert result.content == "Hello" and result.done_reason == "stop"
    assert (result.prompt_eval_count, result.eval_count) == (21, 3)
    assert result.prompt_eval_duration == 12_500_000 and result.eval_duration == 40_000_000
    assert result.extra == {"cached_tokens": 5}
    assert seen["path"] == "/v1/chat/completions"
    assert seen["max_tokens"] == 16 and seen["temperature"] == 0.0 and seen["seed"] == 7
    assert seen["stream"] is True and seen["stream_options"] == {"include_usage": True}
    assert "num_ctx" not in seen and "options" not in seen and "keep_alive" not in seen


def test_sse_comments_event_fields_crlf_and_split_reads_are_handled():
    body = (b": ping\r\n\r\nevent: message\r\n" + sse(delta("a"), delta("b", "length"), USAGE).replace(b"\n", b"\r\n"))

    class Chunked(httpx.SyncByteStream):
        def __iter__(self):
            for i in range(0, len(body), 7):  # events cut at arbitrary byte positions
                yield body[i:i + 7]

    result = client_for(lambda r: httpx.Response(200, stream=Chunked())).chat(request("m", MESSAGES))
    assert result.content == "ab" and result.done_reason == "length" and result.eval_count == 3


def test_json_schema_becomes_response_format():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    seen = {}

    def handler(request):
        seen.update(json.loads(request.content))
        return httpx.Response(200, content=sse(delta("{}", "stop"), USAGE))

    client_for(handler).chat(request("m", MESSAGES, format=schema))
    assert seen["response_format"] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    assert "truncate" not in seen and "format" not in seen


def test_non_streamed_answer():
    def handler(request):
        assert "stream_options" not in json.loads(request.content)
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "ok"},
                                                      "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 9, "completion_tokens": 1}})

    result = client_for(handler, stream=False).chat(request("m", MESSAGES))
    assert (result.content, result.prompt_eval_count, result.eval_count) == ("ok", 9, 1)


def test_stream_without_done_is_incomplete():
    client = client_for(lambda r: httpx.Response(200, content=sse(delta("a"), done=False)))
    with pytest.raises(e.IncompleteResponse, match=r"\[DONE\]"):
        client.chat(request("m", MESSAGES))


def test_stream_without_finish_reason_is_incomplete():
    client = client_for(lambda r: httpx.Response(200, content=sse(delta("a"), USAGE)))
    with pytest.raises(e.IncompleteResponse, match="finish_reason"):
        client.chat(request("m", MESSAGES))


def test_stream_without_usage_is_fatal_and_says_what_to_do():
    # llama-cpp-python 0.3.36's server ignores stream_options.include_usage (seen on its /v1/chat/completions)
    client = client_for(lambda r: httpx.Response(200, content=sse(delta("a", "stop"))))
    with pytest.raises(e.FatalError, match="CHUNKWISE_OPENAI_STREAM=false"):
        client.chat(request("m", MESSAGES))


def test_event_that_is_not_json_is_incomplete():
    client = client_for(lambda r: httpx.Response(200, content=b"data: {broken\n\n"))
    with pytest.raises(e.IncompleteResponse, match="not JSON"):
        client.chat(request("m", MESSAGES))


def test_error_object_mid_stream_is_a_server_error():
    # llama.cpp server-context.cpp: format_oai_sse({"error": ...}) after the first chunk
    body = sse(delta("a"), {"error": {"code": 500, "message": "slot died", "type": "server_error"}}, done=False)
    with pytest.raises(e.ServerError, match=r"slot died.*in stream"):
        client_for(lambda r: httpx.Response(200, content=body)).chat(request("m", MESSAGES))


def test_context_error_mid_stream_is_context_exceeded():
    body = sse({"error": {"code": 400, "message": "request (5396 tokens) exceeds the available context size "
                          "(2048 tokens), try increasing it", "type": "exceed_context_size_error",
                          "n_prompt_tokens": 5396, "n_ctx": 2048}}, done=False)
    with pytest.raises(e.ContextExceeded, match="5396 tokens exceeds the server's context of 2048"):
        client_for(lambda r: httpx.Response(200, content=body)).chat(request("m", MESSAGES))


LLAMA_CTX = {"error": {"code": 400, "message": "request (5396 tokens) exceeds the available context size "
                       "(2048 tokens), try increasing it", "type": "exceed_context_size_error",
                       "n_prompt_tokens": 5396, "n_ctx": 2048}}
OPENAI_CTX = {"error": {"message": "This model's maximum context length is 2048 tokens. However, you requested 5412 "
                        "tokens (5396 in the messages, 16 in the completion).", "type": "invalid_request_error",
                        "param": "messages", "code": "context_length_exceeded"}}
VLLM_CTX = {"error": {"message": "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum "
                      "context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778).",
                      "type": "BadRequestError", "param": None, "code": 400}}
VLLM_OLD_CTX = {"object": "error", "message": "This model's maximum context length is 4096 tokens. However, you "
                "requested 5000 tokens", "type": "BadRequestError", "param": None, "code": 400}


@pytest.mark.parametrize(
    ("status", "body", "error", "hint"),
    [
        (400, LLAMA_CTX, e.ContextExceeded, "5396 tokens exceeds the server's context of 2048"),
        (400, OPENAI_CTX, e.ContextExceeded, "maximum context length is 2048"),
        (400, VLLM_CTX, e.ContextExceeded, "4096 tokens"),
        (400, VLLM_OLD_CTX, e.ContextExceeded, "5000 tokens"),
        (400, {"error": {"code": 400, "message": "Unrecognized request argument supplied: foo",
                         "type": "invalid_request_error"}}, e.BadRequest, "status 400"),
        (401, {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}},
         e.FatalError, "CHUNKWISE_API_KEY"),
        (403, {"error": "forbidden"}, e.FatalError, "CHUNKWISE_API_KEY"),
        (404, {"error": {"message": "The model `gpt-x` does not exist", "code": "model_not_found"}},
         e.ModelNotFound, "GET /v1/models"),
        (429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}, e.ServerError, "429"),
        (429, {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}},
         e.FatalError, "quota"),
        (503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, e.ServerBusy,
         "Loading model"),
        (500, b"<html>Internal Server Error</html>", e.ServerError, "Internal Server Error"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_status_codes_map_to_the_error_tree(status, body, error, hint, stream):
    def handler(request):
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    with pytest.raises(error, match=hint) as info:
        client_for(handler, stream=stream).chat(request("gpt-x", MESSAGES))
    assert info.value.status == status
    assert not isinstance(info.value, e.TransientError) or error in (e.ServerError, e.ServerBusy)
    again = pickle.loads(pickle.dumps(info.value))  # Prefect pickles a failed task's exception
    assert type(again) is error and str(again) == str(info.value) and again.status == status


def test_transport_failures_are_transient():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(e.ServerUnavailable, match="chunkwise engine"):
        client_for(refuse).chat(request("m", MESSAGES))

    def stall(request):
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(e.RequestTimeout):
        client_for(stall).chat(request("m", MESSAGES))

    class Broken(httpx.SyncByteStream):
        def __iter__(self):
            yield sse(delta("a"), done=False)
            raise httpx.RemoteProtocolError("peer closed connection")

    with pytest.raises(e.IncompleteResponse, match="broke mid-response"):
        client_for(lambda r: httpx.Response(200, stream=Broken())).chat(request("m", MESSAGES))


def test_models_and_slot_context():
    def handler(request):
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "gemma3-270m", "object": "model"}]})
        if request.url.path == "/props":
            return httpx.Response(200, json={"default_generation_settings": {"n_ctx": 2048}})
        return httpx.Response(404, json={"error": "nope"})

    client = client_for(handler)
    assert client.models() == ["gemma3-270m"]
    assert client.slot_context() == 2048
    assert client_for(lambda r: httpx.Response(404, json={"error": "Not Found"})).slot_context() is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("127.0.0.1", "http://127.0.0.1:8080"), ("localhost:8000", "http://localhost:8000"),
     ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"), ("https://api.example/v1/", "https://api.example"),
     ("http://[::1]:9000", "http://[::1]:9000")],
)
def test_base_url_forms(given, expected):
    assert oc.parse_base_url(given) == expected


@pytest.mark.parametrize("bad", ["", "file:///etc/passwd", "http://:80", "http://h:notaport"])
def test_bad_base_urls_are_config_errors(bad):
    with pytest.raises(e.ConfigError):
        oc.parse_base_url(bad)


def test_api_key_is_sent_as_bearer_and_never_shown():
    key = "sk-test-" + "9" * 24
    seen = {}

    def handler(request):
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(401, json={"error": {"message": "Invalid API Key", "type": "authentication_error"}})

    client = client_for(handler, api_key=key)
    with pytest.raises(e.FatalError) as info:
        client.chat(request("m", MESSAGES))
    assert seen["auth"] == f"Bearer {key}"
    assert key not in str(info.value) and key not in repr(info.value) and key not in repr(client)

    def no_key(request):
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(200, content=sse(delta("a", "stop"), USAGE))

    client_for(no_key).chat(request("m", MESSAGES))
    assert seen["auth"] is None


@pytest.mark.parametrize("stream", [True, False])
def test_a_server_that_repeats_the_key_in_its_error_does_not_put_it_in_chunkwises_message(stream):
    """Some servers answer a refused key with "Incorrect API key provided: <key>"; that body becomes the
    error message a run prints and records, so the key is cut out of it first."""
    key = "sk-echoed-" + "4" * 24

    def handler(request):
        given = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {given}",
                                                   "code": "invalid_api_key"}})

    client = client_for(handler, stream=stream, api_key=key)
    with pytest.raises(e.FatalError) as info:
        client.chat(request("m", MESSAGES))
    assert "Incorrect API key provided: [the API key]" in str(info.value)
    assert key not in str(info.value) and key not in repr(info.value.args)
    with pytest.raises(e.FatalError) as info:
        client.models()
    assert key not in str(info.value)
