"""The Ollama boundary: response parsing and the error tree, against httpx.MockTransport."""

import json
import pickle

import httpx
import pytest
from prefect.states import Completed, Failed

from chunkwise import errors as e
from chunkwise.ollama import client as o
from tasks.chunk import retry_condition
from tests.support.backends import request


def client_for(handler, stream=True):
    return o.OllamaClient("http://ollama.test:11434", stream=stream, transport=httpx.MockTransport(handler))


def ndjson(*lines):
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


FINAL = {"model": "m", "done": True, "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 3,
         "total_duration": 5_000_000, "load_duration": 1_000, "prompt_eval_duration": 2_000,
         "eval_duration": 3_000, "message": {"role": "assistant", "content": "!"}}


def test_streamed_answer_is_assembled_with_metrics():
    def handler(request):
        body = json.loads(request.content)
        assert body["stream"] is True and body["options"]["num_ctx"] == 4096 and body["truncate"] is False
        return httpx.Response(200, content=ndjson(
            {"message": {"role": "assistant", "content": "Hel"}, "done": False},
            {"message": {"role": "assistant", "content": "lo"}, "done": False}, FINAL))

    result = client_for(handler).chat(request("m", [{"role": "user", "content": "hi"}], num_ctx=4096, truncate=False))
    assert result.content == "Hello!"
    assert (result.prompt_eval_count, result.eval_count, result.done_reason) == (12, 3, "stop")
    assert result.total_duration == 5_000_000 and result.eval_duration == 3_000


def test_non_streamed_answer_and_omitted_zero_metrics():
    final = {k: v for k, v in FINAL.items() if k != "load_duration"}  # Ollama omits zero values
    client = client_for(lambda r: httpx.Response(200, json=final), stream=False)
    result = client.chat(request("m"))
    assert result.content == "!" and result.load_duration == 0


def test_a_multi_line_server_message_becomes_one_line_with_each_line_once():
    """Ollama 0.33.0's load error for a GGUF with an unknown tokenizer (llama-server logs the line twice)."""
    line = "error loading model: error loading model vocabulary: unknown tokenizer: 'llamq'"
    message = f"llama-server process has terminated: exit status 1: {line}\n{line}"
    client = client_for(lambda r: httpx.Response(500, json={"error": message}))
    with pytest.raises(e.ServerError) as info:
        client.chat(request("m"))
    text = str(info.value)
    assert "\n" not in text and text.count("unknown tokenizer") == 1
    assert text.startswith(f"llama-server process has terminated: exit status 1: {line}")


def test_llama_servers_error_body_passed_on_by_ollama_is_unwrapped_to_its_message():
    """Ollama >= 0.30 (tests/fixtures/ollama-0.33.0/chat_overlong_truncate_false.json) passes llama-server's
    JSON error body on as its message: the record says llama-server's sentence, not the JSON."""
    inner = "request (1526 tokens) exceeds the available context size (256 tokens), try increasing it"
    body = json.dumps({"error": {"code": 400, "message": inner, "type": "exceed_context_size_error",
                                 "n_prompt_tokens": 1526, "n_ctx": 256}}, separators=(",", ":"))
    client = client_for(lambda r: httpx.Response(400, json={"error": body}))
    with pytest.raises(e.ContextExceeded) as info:
        client.chat(request("m"))
    assert inner in str(info.value) and "{" not in str(info.value)
    for other in ("{not json", '{"error": "flat"}', '["error"]'):  # anything else stays as it is
        client = client_for(lambda r, other=other: httpx.Response(500, json={"error": other}))
        with pytest.raises(e.ServerError) as failed:
            client.chat(request("m"))
        assert other in str(failed.value)


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (404, "model 'nope' not found", e.ModelNotFound),
        (400, "the input length exceeds the context length", e.ContextExceeded),
        (400, "invalid JSON schema in format", e.BadRequest),
        (503, "server busy, please try again.  maximum pending requests exceeded", e.ServerBusy),
        (500, "model runner has unexpectedly stopped", e.ServerError),
    ],
)
def test_status_codes_map_to_the_error_tree(status, message, error):
    client = client_for(lambda r: httpx.Response(status, json={"error": message}))
    with pytest.raises(error) as info:
        client.chat(request("nope"))
    assert info.value.status == status
    assert message in str(info.value)
    if error is e.ModelNotFound:
        assert "ollama pull nope" in str(info.value)
    assert e.is_transient(info.value) == issubclass(error, e.TransientError)


def test_error_line_inside_a_200_stream_is_a_server_error():
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=ndjson({"message": {"content": "a"}, "done": False},
                                                  {"error": "model runner has unexpectedly stopped"}))

    with pytest.raises(e.ServerError, match="in stream"):
        client_for(handler).chat(request("m"))


def test_stream_ending_without_done_is_incomplete():
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=ndjson({"message": {"content": "a"}, "done": False}))

    with pytest.raises(e.IncompleteResponse):
        client_for(handler).chat(request("m"))


def test_done_false_without_metrics_is_incomplete():
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": "m", "message": {"content": "x"}, "done": False})

    with pytest.raises(e.IncompleteResponse):
        client_for(handler, stream=False).chat(request("m"))


def test_connection_refused_is_server_unavailable_with_a_hint():
    def handler(request):
        raise httpx.ConnectError("Connection refused", request=request)

    with pytest.raises(e.ServerUnavailable) as info:
        client_for(handler).version()
    assert "ollama serve" in str(info.value) and "chunkwise sim" in str(info.value)
    assert "http://ollama.test:11434" in str(info.value)


def test_read_timeout_is_a_request_timeout():
    def handler(request):
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(e.RequestTimeout):
        client_for(handler).chat(request("m"))


def test_errors_survive_pickling_as_prefect_requires():
    for exc in (e.ModelNotFound("gone", 404), e.ServerBusy("busy", 503), e.ConfigError("bad")):
        clone = pickle.loads(pickle.dumps(exc))
        assert type(clone) is type(exc) and str(clone) == str(exc) and clone.status == exc.status


def test_retry_condition_retries_only_transient_failures():
    assert retry_condition(None, None, Failed(data=e.ServerUnavailable("down"))) is True
    assert retry_condition(None, None, Failed(data=e.ModelNotFound("gone", 404))) is False
    assert retry_condition(None, None, Failed(data=ValueError("bug"))) is False
    assert retry_condition(None, None, Completed(data=1)) is False


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("127.0.0.1", "http://127.0.0.1:11434"), ("0.0.0.0:1234", "http://0.0.0.0:1234"),
     ("https://gpu.example.com", "https://gpu.example.com:443"), ("http://[::1]:8080/", "http://[::1]:8080")],
)
def test_parse_host_like_ollamas_client(raw, normalised):
    assert o.parse_host(raw) == normalised


@pytest.mark.parametrize("bad", ["file:///etc/passwd", "ftp://x", "", "http://", "http://h:port"])
def test_parse_host_refuses_non_http(bad):
    with pytest.raises(e.ConfigError):
        o.parse_host(bad)
