"""What the client sends to and reads from a real Ollama (issue 9), against httpx.MockTransport:
think/shift/truncate fields, the thinking trace, `/api/show` verbose, and OLLAMA_HOST forms."""

import json

import httpx
import pytest

from chunkwise.errors import ConfigError
from chunkwise.ollama import client as o
from tests.support.backends import request


def client_for(handler, stream=True):
    return o.OllamaClient("http://ollama.test:11434", stream=stream, transport=httpx.MockTransport(handler))


def ndjson(*lines):
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


FINAL = {"done": True, "done_reason": "stop", "prompt_eval_count": 12, "eval_count": 30,
         "message": {"role": "assistant", "content": ""}}


def test_think_shift_and_truncate_are_sent_and_the_thinking_trace_is_kept_apart():
    seen = {}

    def handler(request):
        seen.update(json.loads(request.content))
        return httpx.Response(200, content=ndjson(
            {"message": {"role": "assistant", "content": "", "thinking": "Let me "}, "done": False},
            {"message": {"role": "assistant", "content": "", "thinking": "see."}, "done": False},
            {"message": {"role": "assistant", "content": "42"}, "done": False}, FINAL))

    result = client_for(handler).chat(request("m", truncate=False, shift=False, think="low"))
    assert (seen["truncate"], seen["shift"], seen["think"]) == (False, False, "low")
    assert (result.content, result.thinking) == ("42", "Let me see.")


def test_non_streamed_thinking_and_an_error_body_with_status_200():
    answer = {**FINAL, "message": {"role": "assistant", "content": "a", "thinking": "t"}}
    result = client_for(lambda r: httpx.Response(200, json=answer), stream=False).chat(request("m", think=False))
    assert (result.content, result.thinking) == ("a", "t")
    failing = client_for(lambda r: httpx.Response(200, json={"error": "llama runner process has terminated"}),
                         stream=False)
    with pytest.raises(o.ServerError, match="llama runner process has terminated"):
        failing.chat(request("m"))


def test_fields_left_unset_are_not_sent():
    seen = {}

    def handler(request):
        seen.update(json.loads(request.content))
        return httpx.Response(200, content=ndjson(FINAL))

    client_for(handler).chat(request("m"))
    assert not {"think", "shift", "truncate"} & set(seen)


def test_show_asks_for_verbose_model_info():
    seen = {}

    def handler(request):
        seen.update(json.loads(request.content))
        return httpx.Response(200, json={"model_info": {}, "capabilities": ["completion"]})

    client_for(handler).show("llama3.1")
    assert seen == {"model": "llama3.1", "verbose": True}


@pytest.mark.parametrize(
    ("raw", "normalised"),
    # envconfig/config_test.go TestHost (ollama v0.33.0-rc2), with ":port" dialled on this machine
    [(":11434", "http://127.0.0.1:11434"), ("[::1]", "http://[::1]:11434"), ("::1", "http://[::1]:11434"),
     ("[::1]:1337", "http://[::1]:1337"), ("example.com", "http://example.com:11434"),
     ("example.com:1234", "http://example.com:1234"), (" '1.2.3.4' ", "http://1.2.3.4:11434"),
     ('"1.2.3.4"', "http://1.2.3.4:11434"), ("http://1.2.3.4", "http://1.2.3.4:80"),
     ("https://1.2.3.4", "https://1.2.3.4:443"), ("https://example.com/ollama", "https://example.com:443/ollama"),
     ("ollama.com", "https://ollama.com:443")],
)
def test_host_forms_ollamas_client_accepts(raw, normalised):
    assert o.parse_host(raw) == normalised


@pytest.mark.parametrize("bad", [":66000", ":-1", ":0", "host:99999", "[::1", "[::1]x", "1:2:zz", "tcp://h:1"])
def test_host_forms_refused_with_a_message(bad):
    with pytest.raises(ConfigError, match=r"write|only http"):
        o.parse_host(bad)
