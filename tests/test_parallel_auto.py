"""`--parallel auto` (issue 22 item 6): the run takes the slot count the server states (llama-server's
/props, SGLang's /v1/loads or /get_server_info); where the server states none (Ollama, vLLM) it says so and
keeps its number; a number the user gave is kept and compared with the server's."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import httpx
import pytest

from chunkwise.backend import ServerFacts
from chunkwise.commands.common import add_shared_flags
from chunkwise.ollama.backend import NO_SLOT_COUNT, facts_of
from chunkwise.openai.client import OpenAIClient
from chunkwise.params import RunParams
from chunkwise.run.parallel import resolve_parallel
from chunkwise.run.prepare import prepare_run
from chunkwise.servers import backend_for
from chunkwise.store import lock
from tests.support.pipeline_helpers import write_requests
from tests.test_backends import llama_server, props

OPENAI = backend_for("openai")


def server(endpoints: dict[str, Any]) -> OpenAIClient:
    """An OpenAI-compatible server answering `endpoints` (path -> JSON body), 404 for every other path."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = endpoints.get(request.url.path)
        return httpx.Response(200, json=body) if body is not None else httpx.Response(404, json={"detail": "Not Found"})

    return OpenAIClient("http://127.0.0.1:8000", stream=False, transport=httpx.MockTransport(handler))


MODELS = {"/v1/models": {"data": [{"id": "m"}]}}


@pytest.mark.parametrize(("endpoints", "slots", "source"), [
    ({"/props": {**props(), "total_slots": 256}}, 256, "llama-server /props total_slots"),
    ({"/v1/loads": {"dp_rank_count": 2, "loads": [{"dp_rank": 0, "max_running_requests": 128},
                                                  {"dp_rank": 1, "max_running_requests": 128}]}},
     256, "SGLang /v1/loads"),
    ({"/get_server_info": {"max_running_requests": 48, "dp_size": 1}}, 48, "SGLang /get_server_info"),
    ({}, None, "states no slot count"),  # vLLM: /v1/models and nothing else
    ({"/props": props()}, None, "/props states no total_slots"),  # a llama-server that does not say
    ({"/v1/loads": {"loads": [{"max_running_requests": 64}, {"max_running_requests": None}]},
      "/get_server_info": {"max_running_requests": True}}, None, "states no slot count"),  # half-stated: unknown
])
def test_the_openai_backend_reads_the_slot_count_where_the_server_states_it(endpoints, slots, source):
    facts = OPENAI.inspect(server({**MODELS, **endpoints}), "m")
    assert facts.slots == slots
    assert source in facts.slots_source


def test_ollama_states_no_slot_count():
    facts = facts_of({"version": "0.24.0"}, {"model_info": {}}, [], "m")
    assert facts.slots is None and facts.slots_source == NO_SLOT_COUNT


def test_auto_or_no_number_takes_the_servers_count_and_a_number_is_kept():
    stated = ServerFacts(version="", slots=256, slots_source="llama-server /props total_slots at h")
    auto = RunParams(input_path="x.parquet", parallel="auto")
    assert auto.parallel_auto and "parallel" not in auto.model_fields_set
    resolved, note, warn = resolve_parallel(auto, stated)
    assert resolved.parallel == 256 and not warn and note is not None and "256 requests in flight" in note
    left_out, note, warn = resolve_parallel(RunParams(input_path="x.parquet"), stated)  # as num_ctx follows it
    assert left_out.parallel == 256 and not warn and note is not None and "--parallel (not given)" in note
    big, note, _ = resolve_parallel(auto, ServerFacts(version="", slots=4096, slots_source="s"))
    assert big.parallel == 1024 and note is not None and "at most 1024" in note
    mine = RunParams(input_path="x.parquet", parallel=16)
    kept, note, warn = resolve_parallel(mine, stated)
    assert kept.parallel == 16 and warn and note is not None and "leaves 240 of the server's 256 slots idle" in note
    over = RunParams(input_path="x.parquet", parallel=300)
    kept, note, warn = resolve_parallel(over, stated)
    assert kept.parallel == 300 and warn and note is not None and "44 requests wait in its queue" in note
    same = RunParams(input_path="x.parquet", parallel=256)
    assert resolve_parallel(same, stated) == (same, None, False)


def test_auto_against_a_server_that_states_nothing_says_so_and_keeps_the_number():
    ollama = facts_of({"version": "0.24.0"}, {"model_info": {}}, [], "m")
    default = RunParams.model_fields["parallel"].default
    resolved, note, warn = resolve_parallel(RunParams(input_path="x.parquet", parallel="auto"), ollama)
    assert resolved.parallel == default and warn
    assert note is not None and "Ollama does not state its slot count" in note and "pass --parallel N" in note
    for params in (RunParams(input_path="x.parquet", parallel=4), RunParams(input_path="x.parquet")):
        assert resolve_parallel(params, ollama) == (params, None, False)


def test_the_flag_takes_a_number_or_auto_and_refuses_anything_else(capsys):
    parser = argparse.ArgumentParser()
    add_shared_flags(parser)
    assert parser.parse_args(["--input", "x", "--parallel", "auto"]).parallel == "auto"
    assert parser.parse_args(["--input", "x", "--parallel", "8"]).parallel == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["--input", "x", "--parallel", "many"])
    assert "'many' is not a whole number or 'auto'" in capsys.readouterr().err


def test_a_run_with_parallel_auto_takes_llama_servers_slots(tmp_path, caplog):
    source = write_requests(tmp_path / "in.parquet", 3)
    with llama_server({**props(), "total_slots": 6}) as url, caplog.at_level(logging.INFO):
        run = RunParams(input_path=str(source), api="openai", num_ctx=4096, host=url, model="m", parallel="auto",
                        output_dir=str(tmp_path / "runs"), run_name="auto")
        prepared = prepare_run(run)
        lock.release(prepared.ctx.dir)
    assert prepared.ctx.params.parallel == 6
    assert "--parallel auto: 6 requests in flight (llama-server /props total_slots" in caplog.text



def test_plan_probe_reads_sglangs_slot_count_without_props():
    """`chunkwise plan`'s probe: SGLang has no /props, so the KV layout stays unknown, but its slots are read."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from chunkwise.openai.probe import probe_model

    answers = {**MODELS, "/v1/loads": {"loads": [{"dp_rank": 0, "max_running_requests": 48}]}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answers.get(self.path)
            data = json.dumps(body if body is not None else {"detail": "Not Found"}).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        facts = probe_model(f"http://127.0.0.1:{server.server_address[1]}", "m")
    finally:
        server.shutdown()
        server.server_close()
    assert facts.model_info is None and "no llama.cpp /props" in facts.source
    assert facts.slots == 48
