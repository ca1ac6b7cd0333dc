"""The backend objects (chunkwise.servers, chunkwise.ollama.backend, chunkwise.openai.backend): one factory,
the facts each server kind reports, the request fields each owns, and every run option one kind cannot
honour refused in one line before anything is sent (never silently ignored)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from chunkwise.backend import ChatOptions, ChatRequest, ServerFacts
from chunkwise.errors import ConfigError, ServerMismatch, SetupError, ThinkError
from chunkwise.openai.client import OpenAIClient
from chunkwise.openai.thinking import think_support
from chunkwise.params import RunParams
from chunkwise.run.prepare import prepare_run
from chunkwise.servers import backend_for
from chunkwise.store import lock
from tests.support.pipeline_helpers import write_requests

OLLAMA, OPENAI = backend_for("ollama"), backend_for("openai")
#: A chat template that reads both thinking switches (Qwen3-like), and one that reads neither (Gemma 3).
THINKING_TEMPLATE = "{%- if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}"
PLAIN_TEMPLATE = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m.content }}{% endfor %}"


def params(**changes: Any) -> RunParams:
    return RunParams(**{"input_path": "in.parquet", "api": "openai", "num_ctx": 4096, **changes})


def props(template: str = PLAIN_TEMPLATE, effort: bool = False, n_ctx: int = 4096) -> dict[str, Any]:
    return {"default_generation_settings": {"n_ctx": n_ctx}, "build_info": "b1-0c1e570", "chat_template": template,
            "chat_template_caps": {"supports_reasoning_effort": effort, "supports_system_role": True}}


def test_the_factory_knows_two_kinds_and_refuses_others():
    assert (OLLAMA.api, OPENAI.api) == ("ollama", "openai") and backend_for("ollama") is OLLAMA
    with pytest.raises(ConfigError, match="unknown api 'vllm'; use one of ollama, openai"):
        backend_for("vllm")


def test_ollama_owns_truncate_shift_keep_alive_and_think():
    assert OLLAMA.request_extras(think=None, keep_alive="30m") == {"truncate": False, "shift": False,
                                                                   "keep_alive": "30m"}
    assert OLLAMA.request_extras(think="low", keep_alive="5m")["think"] == "low"
    assert OPENAI.request_extras(think=None, keep_alive="30m") == {}


@pytest.mark.parametrize(("version", "cuts"), [("0.12.5", True), ("0.12.6", False), ("0.0.0", False),
                                               ("0.30.11", False)])
def test_ollama_facts_say_whether_the_server_may_cut_a_prompt(version, cuts):
    from chunkwise.ollama.backend import facts_of

    facts = facts_of({"version": version}, {"model_info": {}}, [], "m")
    assert (facts.cuts_prompts, facts.truncate_switch, facts.memory_view) == (cuts, True, True)


@pytest.mark.parametrize(("server_props", "think", "sent"), [
    (None, "high", {"reasoning_effort": "high"}),  # vLLM, OpenAI: levels are part of the API
    (props(THINKING_TEMPLATE, effort=True), "low", {"reasoning_effort": "low"}),
    (props(THINKING_TEMPLATE), "on", {"chat_template_kwargs": {"enable_thinking": True}}),
    (props(THINKING_TEMPLATE), "off", {"chat_template_kwargs": {"enable_thinking": False}}),
    (props(PLAIN_TEMPLATE), None, {}),
])
def test_openai_think_maps_to_what_the_server_reads(server_props, think, sent):
    facts = ServerFacts(version="", think=think_support(server_props))
    resolved = OPENAI.check(params(think=think), facts)
    assert OPENAI.request_extras(think=resolved, keep_alive="30m") == sent
    body = OpenAIClient("http://h:8080").body(ChatRequest("m", [], ChatOptions(4096, 16, 0.0, 0), extras=sent))
    assert {k: body[k] for k in sent} == sent


@pytest.mark.parametrize(("server_props", "think", "hint"), [
    (None, "on", "no llama.cpp /props.*leave --think out or use --think low|medium|high"),
    (None, "off", "cannot be told to think or not"),
    (props(PLAIN_TEMPLATE), "on", "never reads enable_thinking"),
    (props(PLAIN_TEMPLATE), "high", "ignores reasoning_effort.*takes no thinking levels"),
    (props(THINKING_TEMPLATE), "medium", "takes no thinking levels; leave --think out or use --think on|off"),
])
def test_openai_think_the_server_cannot_take_is_refused_in_one_line(server_props, think, hint):
    with pytest.raises(ThinkError, match=hint) as info:
        OPENAI.check(params(think=think), ServerFacts(version="", think=think_support(server_props)))
    assert "\n" not in str(info.value) and info.value.exit_code == 2


@pytest.mark.parametrize(("changes", "hint"), [
    ({"keep_alive": "24h"}, "--keep-alive 24h with --api openai: the server decides"),
    ({"pool": "gpus"}, "--pool \\(distributed mode\\) needs --api ollama"),
    ({"num_ctx": 8192}, "num_ctx 8192 is above the server's context of 4096 tokens per slot"),
])
def test_openai_refuses_the_options_it_cannot_honour(changes, hint):
    with pytest.raises(ServerMismatch, match=hint):
        OPENAI.check(params(**changes), ServerFacts(version="", slot_ctx=4096))


def test_the_reasoning_trace_of_an_openai_server_is_kept():
    events = [{"choices": [{"delta": {"reasoning_content": "Let me "}}]},
              {"choices": [{"delta": {"reasoning_content": "see."}}]},
              {"choices": [{"delta": {"content": "42"}, "finish_reason": "stop"}]},
              {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    client = OpenAIClient("http://h:8080", transport=httpx.MockTransport(lambda r: httpx.Response(200, text=body)))
    result = client.chat(ChatRequest("m", [], ChatOptions(4096, 16, 0.0, 0)))
    assert (result.content, result.thinking, result.eval_count) == ("42", "Let me see.", 9)


@contextmanager
def llama_server(server_props: dict[str, Any]) -> Iterator[str]:
    """A loopback server answering /v1/models and /props as llama-server does (nothing else)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = {"/v1/models": {"data": [{"id": "m"}]}, "/props": server_props}.get(self.path)
            data = json.dumps(body or {"error": "not found"}).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_think_with_api_openai_is_refused_at_setup_not_ignored(tmp_path):
    """Before: `--api openai --think on` ran and sent nothing about thinking. Now the run does not start."""
    source = write_requests(tmp_path / "in.parquet", 3)
    with llama_server(props(PLAIN_TEMPLATE)) as url:
        run = params(input_path=str(source), host=url, model="m", output_dir=str(tmp_path / "runs"), run_name="t")
        with pytest.raises(ThinkError, match="--think on with --api openai"):
            prepare_run(run.model_copy(update={"think": "on"}))
        with llama_server(props(THINKING_TEMPLATE)) as thinking:
            prepared = prepare_run(run.model_copy(update={"think": "on", "host": thinking}))
        lock.release(prepared.ctx.dir)
    assert prepared.ctx.think == "on" and prepared.ctx.content_key() != prepared.ctx.model_copy(
        update={"think": None}).content_key()


def test_setup_errors_are_setup_errors():
    assert issubclass(ThinkError, ServerMismatch) and issubclass(ServerMismatch, SetupError)
