"""One request's policies against a real Ollama's behaviour (issues 9 and 19), with httpx.MockTransport:
truncate/shift/think on every request, the run-level circuit breaker on rows (a poison row is recorded, the
same failure on several rows stops the run, timeouts stop it sooner), 503 as back-pressure, a warmer retry for
invalid answers and repeat aborts (greedy decoding ignores the seed), a context that fills during the answer,
thinking."""

import json

import httpx
import pytest

from chunkwise.errors import AnswerUnfinished, ServerError, ServerKeepsFailing
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
    params.setdefault("parallel", 1)  # one request at a time: the breaker trips at `threshold` rows
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


POISON = 'template: :3:57: executing "" at <index $.Messages 99>: error calling index: index out of range: 99'


def test_one_row_that_fails_every_attempt_is_recorded_with_the_servers_message_and_the_run_goes_on(tmp_path):
    """A poison row (a template Ollama cannot render for this row only, routes.go): its own six attempts do not
    trip the breaker (they used to, at threshold 5), it is recorded failed, and the next row is answered."""
    calls = []

    def handler(request):
        calls.append(1)
        poisoned = json.loads(request.content)["messages"][-1]["content"] == "POISON"
        return httpx.Response(500, json={"error": POISON}) if poisoned else httpx.Response(200, json=final())

    ctx, rt = setup(tmp_path, handler, threshold=5, max_attempts=6)
    record = send(ctx, rt, row=0, chunk=0, messages=[{"role": "user", "content": "POISON"}])
    assert (record["status"], record["error_class"], record["attempts"]) == ("failed", "transient", 6)
    assert POISON in record["error_message"] and len(calls) == 6 and rt.fatal is None
    assert send(ctx, rt, row=1, chunk=0, messages=USER)["status"] == "ok"


def test_the_same_500_on_different_rows_in_a_row_trips_the_breaker_with_the_servers_message(tmp_path):
    calls = []

    def handler(request):
        calls.append(1)
        error = "llama runner process has terminated: cudaMalloc failed: out of memory"
        return httpx.Response(500, json={"error": error})

    ctx, rt = setup(tmp_path, handler, threshold=3, max_attempts=2, parallel=1)  # trips at threshold + parallel - 1
    for row in (0, 1):  # two rows fail all their attempts: recorded, the run goes on
        assert send(ctx, rt, row=row, chunk=0, messages=USER)["status"] == "failed"
    with pytest.raises(ServerKeepsFailing, match="out of memory") as info:
        send(ctx, rt, row=2, chunk=0, messages=USER)  # the third row in a row trips it at its first attempt
    assert len(calls) == 5 and "3 different rows" in str(info.value) and "resume" in str(info.value)
    assert rt.fatal is info.value  # every other chunk stops sending


def test_an_error_line_in_a_200_answer_counts_for_the_breaker(tmp_path):
    error = {"error": "an error was encountered while running the model"}
    ctx, rt = setup(tmp_path, lambda r: httpx.Response(200, json=error), threshold=2, max_attempts=1)
    assert send(ctx, rt, row=0, chunk=0, messages=USER)["error_class"] == "transient"
    with pytest.raises(ServerKeepsFailing, match="error was encountered"):
        send(ctx, rt, row=1, chunk=0, messages=USER)


def test_poison_rows_between_answered_rows_never_trip_the_breaker(tmp_path):
    def handler(request):
        poisoned = json.loads(request.content)["messages"][-1]["content"] == "POISON"
        return httpx.Response(500, json={"error": POISON}) if poisoned else httpx.Response(200, json=final())

    ctx, rt = setup(tmp_path, handler, threshold=2, max_attempts=3)
    for row in range(6):
        text = "POISON" if row % 2 == 0 else "fine"
        record = send(ctx, rt, row=row, chunk=0, messages=[{"role": "user", "content": text}])
        assert record["status"] == ("failed" if text == "POISON" else "ok")


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
    row = 0
    while queue:
        assert send(ctx, rt, row=row, chunk=0, messages=USER)["status"] == "ok"
        row += 1


def test_the_breaker_counts_one_burst_of_parallel_failures_as_one_and_a_rows_retries_once():
    breaker = CircuitBreaker(2, parallel=4)
    boom = ServerError("boom (status 500)", 500)
    assert [breaker.failure(boom, row) for row in range(4)] == [None] * 4
    assert [breaker.failure(boom, row) for row in range(4)] == [None] * 4  # the same rows again: no new row
    assert isinstance(breaker.failure(boom, 4), ServerKeepsFailing)


def test_another_kind_of_failure_neither_resets_the_count_nor_hides_a_wall_of_them():
    breaker = CircuitBreaker(3)
    boom, unfinished = ServerError("boom (status 500)", 500), AnswerUnfinished("ended without done")
    assert breaker.failure(boom, 0) is None and breaker.failure(unfinished, 1) is None
    assert breaker.failure(boom, 2) is None and breaker.failure(unfinished, 3) is None
    assert isinstance(breaker.failure(boom, 4), ServerKeepsFailing)  # 0, 2, 4: the interleaved wall still trips
    breaker.success()
    assert breaker.count == 0 and breaker.failure(unfinished, 5) is None


def test_a_stalled_server_stops_the_run_within_a_few_read_timeouts(tmp_path):
    """Every request stalls (a hung runner): a row gets two timed-out attempts, not six, and the second row that
    times out stops the run (exit 2), so the run costs three read timeouts, not 6 x 900 s per row."""
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ReadTimeout("timed out", request=request)

    ctx, rt = setup(tmp_path, handler, threshold=5, max_attempts=6)
    record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert (record["error_class"], record["attempts"]) == ("transient", 2) and "timeout" in record["error_message"]
    with pytest.raises(ServerKeepsFailing, match="read timeout") as info:
        send(ctx, rt, row=1, chunk=0, messages=USER)
    assert len(calls) == 3 and info.value.exit_code == 2 and "CHUNKWISE_READ_TIMEOUT_S" in str(info.value)


def test_a_503_is_back_pressure_not_an_attempt_and_waits_only_as_long_as_the_busy_timeout(tmp_path):
    busy = {"error": "server busy, please try again.  maximum pending requests exceeded"}
    queue = [httpx.Response(503, json=busy)] * 8 + [httpx.Response(200, json=final())]
    ctx, rt = setup(tmp_path, lambda r: queue.pop(0), max_attempts=2)
    record = send(ctx, rt, row=0, chunk=0, messages=USER)  # 8 answers 503 on a budget of 2 attempts
    assert (record["status"], record["attempts"]) == ("ok", 9)
    with chunkwise_env(retry_base_delay_s=0.001, retry_max_delay_s=0.001, busy_timeout_s=0.05):
        ctx, rt = setup(tmp_path, lambda r: httpx.Response(503, json=busy), max_attempts=2)
        record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert record["error_class"] == "transient" and "stayed busy for 0.05 s" in record["error_message"]
    assert record["attempts"] > 2


def unfinished_unless_warm(temperatures):
    """A real Ollama at temperature 0 on a looping prompt: 31 tokens, then the answer ends without done."""
    def handler(request):
        options = json.loads(request.content)["options"]
        temperatures.append(options["temperature"])
        if options["temperature"] > 0:
            return httpx.Response(200, json=final())
        return httpx.Response(200, json={"message": {"role": "assistant", "content": " a" * 31}, "done": False})
    return handler


def test_an_answer_that_ends_without_done_is_retried_warmer_then_recorded_incomplete(tmp_path):
    temperatures = []
    ctx, rt = setup(tmp_path, unfinished_unless_warm(temperatures), temperature=0.0)
    record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert record["status"] == "ok" and temperatures == [0.0, 0.4] and record["temperature"] == 0.4
    always = []

    def handler(request):
        always.append(json.loads(request.content)["options"]["temperature"])
        return httpx.Response(200, json={"message": {"role": "assistant", "content": " a" * 31}, "done": False})

    ctx, rt = setup(tmp_path, handler, temperature=0.0, invalid_output_attempts=3, max_attempts=6)
    record = send(ctx, rt, row=0, chunk=0, messages=USER)
    assert (record["status"], record["error_class"]) == ("failed", "incomplete") and always == [0.0, 0.4, 0.8]
    assert "without done: true 3 times" in record["error_message"] and rt.fatal is None


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
