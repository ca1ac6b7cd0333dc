"""One request's policies against a real Ollama's behaviour (issue 9), with httpx.MockTransport:
truncate/shift/think on every request, the run-level circuit breaker, a warmer retry for invalid
answers (greedy decoding ignores the seed), a context that fills during the answer, thinking."""

import json

import httpx
import pytest

from chunkwise.errors import ServerError, ServerKeepsFailing
from chunkwise.ollama.client import OllamaClient
from chunkwise.params import RunParams
from chunkwise.run.breaker import CircuitBreaker
from chunkwise.run.context import RunContext
from chunkwise.run.send import send
from chunkwise.run.session import RunSession
from tests.support.run_checks import chunkwise_env

USER = [{"role": "user", "content": "question"}]


def final(content="ok", done_reason="stop", eval_count=5, thinking=None):
    message = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    return {"done": True, "done_reason": done_reason, "prompt_eval_count": 3, "eval_count": eval_count,
            "message": message}


def setup(tmp_path, handler, *, threshold=3, think=None, **params):
    p = RunParams(input_path="in.parquet", num_ctx=4096, num_predict=64, breaker_threshold=threshold, **params)
    ctx = RunContext(run_dir=str(tmp_path), params=p, host="http://ollama.test:11434", system_prompt="",
                     input_fingerprint="f", model_digest="d", server_version="0.0.0", is_simulator=False,
                     send_truncate_false=True, chars_per_token=4.0, think=think)
    client = OllamaClient(ctx.host, stream=False, transport=httpx.MockTransport(handler))
    rt = RunSession(ctx, client_factory=lambda ctx: client)  # the seam: a client on a MockTransport
    return ctx, rt


@pytest.fixture(autouse=True)
def fast_backoff():
    with chunkwise_env(retry_base_delay_s=0.001, retry_max_delay_s=0.001):
        yield


def test_a_source_build_still_gets_truncate_shift_and_think(tmp_path):
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=final())

    ctx, rt = setup(tmp_path, handler, think=False)
    assert send(ctx, rt, row=0, chunk=0, messages=USER)["status"] == "ok"
    assert (seen[0]["truncate"], seen[0]["shift"], seen[0]["think"]) == (False, False, False)


def test_the_same_500_on_consecutive_requests_trips_the_breaker_with_the_servers_message(tmp_path):
    calls = []

    def handler(request):
        calls.append(1)
        error = "llama runner process has terminated: cudaMalloc failed: out of memory"
        return httpx.Response(500, json={"error": error})

    ctx, rt = setup(tmp_path, handler, threshold=3, max_attempts=6, parallel=1)  # trips at threshold + parallel - 1
    with pytest.raises(ServerKeepsFailing, match="out of memory") as info:
        send(ctx, rt, row=0, chunk=0, messages=USER)
    assert len(calls) == 3 and "resume" in str(info.value)
    assert rt.fatal is info.value  # every other chunk stops sending


def test_an_error_line_in_a_200_answer_counts_for_the_breaker(tmp_path):
    error = {"error": "an error was encountered while running the model"}
    ctx, rt = setup(tmp_path, lambda r: httpx.Response(200, json=error), threshold=2)
    with pytest.raises(ServerKeepsFailing, match="error was encountered"):
        send(ctx, rt, row=0, chunk=0, messages=USER)


@pytest.mark.parametrize("responses", [
    # an answer in between resets the count
    [(500, "boom"), (500, "boom"), (200, None), (500, "boom"), (500, "boom"), (200, None)],
    # different errors are not "the same server error"
    [(500, "boom"), (500, "bang"), (500, "boom"), (500, "bang"), (200, None)],
    # 503 is backpressure, not a broken server
    [(503, "server busy, please try again.  maximum pending requests exceeded")] * 5 + [(200, None)],
])
def test_the_breaker_does_not_trip_on_intermittent_failures(tmp_path, responses):
    queue = list(responses)

    def handler(request):
        status, message = queue.pop(0)
        return httpx.Response(status, json=final() if status == 200 else {"error": message})

    ctx, rt = setup(tmp_path, handler, threshold=3, max_attempts=10)
    while queue:
        assert send(ctx, rt, row=0, chunk=0, messages=USER)["status"] == "ok"


def test_the_breaker_counts_one_burst_of_parallel_failures_as_one():
    breaker = CircuitBreaker(2, parallel=4)
    assert [breaker.failure(ServerError("boom (status 500)", 500)) for _ in range(4)] == [None] * 4
    assert isinstance(breaker.failure(ServerError("boom (status 500)", 500)), ServerKeepsFailing)


def test_an_invalid_answer_is_retried_warmer_because_greedy_decoding_ignores_the_seed(tmp_path):
    temperatures = []

    def handler(request):
        options = json.loads(request.content)["options"]
        temperatures.append(options["temperature"])
        # a real server at temperature 0 repeats its answer whatever the seed
        return httpx.Response(200, json=final('{"a": 1}' if options["temperature"] > 0 else "not json"))

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    ctx, rt = setup(tmp_path, handler, format=schema, temperature=0.0, invalid_output_attempts=3)
    record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert record["status"] == "ok" and temperatures[0] == 0.0 and 0 < temperatures[1] <= 1.0
    assert record["temperature"] == temperatures[-1]


def test_a_context_that_fills_during_the_answer_is_context_truncated(tmp_path):
    ctx, rt = setup(tmp_path, lambda r: httpx.Response(200, json=final("half an ans", "length", eval_count=20)),
                    retry_output_truncated=True)
    record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert (record["status"], record["error_class"], record["attempts"]) == ("failed", "context_truncated", 1)
    assert "context filled during the answer" in record["error_message"]


def test_thinking_is_kept_apart_and_a_trace_that_ate_num_predict_says_so(tmp_path):
    ctx, rt = setup(tmp_path, lambda r: httpx.Response(200, json=final("42", thinking="hmm")), think=True)
    record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert (record["response"], record["thinking"]) == ("42", "hmm")
    ctx, rt = setup(tmp_path, lambda r: httpx.Response(200, json=final("", "length", 64, thinking="hmm " * 64)))
    record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert record["error_class"] == "output_truncated" and "--think off" in record["error_message"]
