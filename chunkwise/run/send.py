"""One request from first attempt to a final outcome, applying each failure class's policy
(see `chunkwise.store.records`). Prompt and answer text are never logged above DEBUG.

Every request carries the backend's own fields for the run (`RunSession.extras`: for Ollama
`truncate: false`, `shift: false`, `keep_alive` and the run's `think`). Failed attempts feed the run's
circuit breaker (`chunkwise.run.breaker`), which stops the run when the same failure hits several
different rows in a row; a row whose own attempts all fail (a poison row) is recorded `failed` with the
server's message and the run goes on.

Budgets per request:
- `max_attempts` attempts for transient failures (a 5xx, a broken-off answer, an unreachable server);
- a read timeout at most `TIMEOUT_ATTEMPTS` times (Ollama has no per-request timeout: a stall is a hung
  runner or a prompt whose prefill outlasts the read timeout, and six 900 s waits per row help neither);
- a 503 is back-pressure (Ollama's load queue is full, `v0.24.0:server/sched.go:131-139`), never an
  attempt: it is retried with the usual backoff for up to `busy_timeout_s` seconds (a setting), then the
  row is recorded `transient`;
- `invalid_output_attempts` answers that fail the JSON schema, and as many answers that end without
  `done: true` (`AnswerUnfinished`: Ollama's repeated-token abort), each retried warmer, then recorded
  `invalid_output` or `incomplete`.

An answer that fails the JSON schema, or ends in a repeat abort, is retried at a higher temperature: at
temperature 0 decoding is greedy and the seed changes nothing (ollama/ollama#586), and a grammar-constrained
or looping answer repeats itself, so a retry with only the next seed would get the same answer again. Retry
k (1-based, both kinds counted) uses `max(temperature, INVALID_RETRY_TEMPERATURE x k)`, capped at
`INVALID_RETRY_MAX_TEMPERATURE`, with seed `seed + k`; the record keeps the temperature used.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from chunkwise.backend import ChatOptions, ChatRequest
from chunkwise.errors import (
    AnswerUnfinished,
    ContextExceeded,
    FatalError,
    LLMError,
    RequestTimeout,
    RunInterrupted,
    ServerBusy,
    ServerUnavailable,
    TransientError,
)
from chunkwise.logs import RunLogger, logger
from chunkwise.run.context import RunContext
from chunkwise.run.session import RunSession
from chunkwise.run.structured import check_answer
from chunkwise.settings import get_settings
from chunkwise.store.records import FailureClass, OutcomeRecord, Status, outcome

_debug = logging.getLogger("chunkwise.run.send")


#: Temperature added per retry of an invalid answer, and its cap.
INVALID_RETRY_TEMPERATURE = 0.4
INVALID_RETRY_MAX_TEMPERATURE = 1.0
#: Read timeouts one request may meet before it is recorded failed (see the module docstring).
TIMEOUT_ATTEMPTS = 2


def retry_temperature(temperature: float, invalid: int) -> float:
    """Sampling temperature for the attempt after `invalid` invalid answers (see the module docstring)."""
    if invalid == 0:
        return temperature
    return max(temperature, min(INVALID_RETRY_MAX_TEMPERATURE, INVALID_RETRY_TEMPERATURE * invalid))


def log() -> RunLogger:
    return logger("chunkwise.run.send")


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with +-50 % jitter: base x 2^(attempt-1), capped, then jittered (the exponent stops
    at 30: a long 503 wait counts its answers in the hundreds)."""
    return float(min(max_s, base_s * 2 ** min(attempt - 1, 30)) * random.uniform(0.5, 1.5))


def check_running(rt: RunSession) -> None:
    """Raise `RunInterrupted` once the run is stopping (a fatal error, or a stop request)."""
    if rt.fatal is not None:
        raise RunInterrupted(f"stopped: another chunk hit a fatal error: {rt.fatal}")
    if rt.stop.is_set():
        raise RunInterrupted("stopped on request (Ctrl-C or SIGTERM); resume with the same run name")


def send(
    ctx: RunContext,
    rt: RunSession,
    *,
    row: int,
    chunk: int,
    messages: list[dict[str, str]],
    context_retries: int = 0,
    slot: AbstractContextManager[Any] | None = None,
    own: dict[str, Any] | None = None,
) -> OutcomeRecord:
    """Send one chat request until it has a final outcome record.

    `slot` (the run's server-slot semaphore, independent mode) is held only while an attempt is on
    the wire and released during the retry backoff, so a failing request never idles a server slot
    that another request could use; a conversation passes None because it holds its one slot for
    the whole conversation (its prefix cache lives on that slot).

    `own` are the request's own options (an OpenAI batch line's: num_predict, temperature, top_p, stop,
    seed, format), each replacing the run's for this request.

    Raises `ServerUnavailable` when the server stays unreachable (the chunk task is then retried
    by Prefect later, and nothing is recorded for this request), `FatalError` to stop the run, and
    `RunInterrupted` when the run is stopping.
    """
    p = ctx.params
    own = own or {}
    settings = get_settings()
    prompt_chars = sum(len(m["content"]) for m in messages)
    num_predict = int(own.get("num_predict", p.num_predict))
    base_temperature, seed = float(own.get("temperature", p.temperature)), int(own.get("seed", p.seed))
    answer_format = own.get("format", p.format)
    top_p, stop = own.get("top_p"), tuple(own["stop"]) if own.get("stop") else None
    attempts = transient = timeouts = busy = invalid = unfinished = 0
    busy_since: float | None = None
    widened = False
    last: dict[str, Any] = {}

    def done(status: Status, error: FailureClass | None = None, message: str | None = None) -> OutcomeRecord:
        return outcome(
            _row=row, chunk=chunk, attempts=attempts, status=str(status), prompt_chars=prompt_chars,
            expected_prompt_tokens=rt.estimator.expected_tokens(prompt_chars),
            error_class=str(error) if error else None, error_message=message, context_retries=context_retries,
            temperature=temperature, **last,
        )

    def failed_attempt(exc: TransientError) -> None:
        tripped = rt.breaker.failure(exc, row)
        if tripped is not None:
            rt.fatal = rt.fatal or tripped
            raise tripped from None

    while True:
        check_running(rt)
        attempts += 1
        warmer = invalid + unfinished
        temperature = retry_temperature(base_temperature, warmer)
        try:
            with slot if slot is not None else nullcontext():
                check_running(rt)  # the stop may have come while this request waited for a slot
                options = ChatOptions(p.num_ctx, num_predict, temperature, seed + warmer, top_p, stop)
                if not rt.first_request.is_set():
                    rt.first_request.set()
                result = rt.client.chat(ChatRequest(p.model, messages, options, answer_format, rt.extras))
        except ContextExceeded as exc:
            rt.breaker.success()
            return done(Status.FAILED, FailureClass.CONTEXT_TRUNCATED, f"{exc}; raise num_ctx or shorten the prompt")
        except FatalError as exc:
            rt.fatal = rt.fatal or exc.at(row=row)
            raise
        except ServerBusy as exc:  # back-pressure: not an attempt (see the module docstring)
            busy += 1
            busy_since = time.monotonic() if busy_since is None else busy_since
            if time.monotonic() - busy_since >= settings.busy_timeout_s:
                return done(Status.FAILED, FailureClass.TRANSIENT,
                            f"the server stayed busy for {settings.busy_timeout_s:g} s ({busy} answers 503): {exc}")
            log().info("row %d: the server is busy (503); waiting", row)
            if rt.stop.wait(backoff_delay(busy, settings.retry_base_delay_s, settings.retry_max_delay_s)):
                check_running(rt)
            continue
        except AnswerUnfinished as exc:  # a repeat abort: the same again at this temperature
            failed_attempt(exc)
            unfinished += 1
            if unfinished < p.invalid_output_attempts:
                log().info("row %d: the answer ended without done: true; retrying warmer", row)
                continue
            return done(Status.FAILED, FailureClass.INCOMPLETE,
                        f"the answer ended without done: true {unfinished} times, the last at temperature "
                        f"{temperature:g}: {exc}; raise --temperature or change the prompt")
        except TransientError as exc:
            failed_attempt(exc)
            transient += 1
            timeouts += isinstance(exc, RequestTimeout)
            if transient >= p.max_attempts or timeouts >= TIMEOUT_ATTEMPTS:
                if isinstance(exc, ServerUnavailable):
                    raise
                return done(Status.FAILED, FailureClass.TRANSIENT, f"gave up after {transient} attempts: {exc}")
            log().info("row %d attempt %d failed transiently (%s); retrying", row, attempts, type(exc).__name__)
            if rt.stop.wait(backoff_delay(transient, settings.retry_base_delay_s, settings.retry_max_delay_s)):
                check_running(rt)
            continue
        except LLMError as exc:  # anything unclassified is fatal rather than silently retried
            rt.fatal = rt.fatal or exc.at(row=row)
            raise
        rt.breaker.success()
        rt.reloads.answered(row, result.load_duration)
        last = {
            "response": result.content,
            "thinking": result.thinking or None,
            "done_reason": result.done_reason,
            "prompt_eval_count": result.prompt_eval_count,
            "eval_count": result.eval_count,
            "total_duration_ns": result.total_duration,
            "load_duration_ns": result.load_duration,
            "prompt_eval_duration_ns": result.prompt_eval_duration,
            "eval_duration_ns": result.eval_duration,
            "latency_ns": result.wall_ns,
        }
        if _debug.isEnabledFor(logging.DEBUG):
            _debug.debug("row %d answered: %r", row, result.content)
        if rt.estimator.is_truncated(prompt_chars, result.prompt_eval_count, p.num_ctx,
                                     server_cuts=ctx.cuts_prompts):
            expected = rt.estimator.expected_tokens(prompt_chars)
            return done(
                Status.FAILED,
                FailureClass.CONTEXT_TRUNCATED,
                f"Ollama evaluated {result.prompt_eval_count} prompt tokens but about {expected} were sent "
                f"(num_ctx {p.num_ctx}): the prompt was cut silently; raise num_ctx or shorten the prompt",
            )
        rt.estimator.observe(prompt_chars, result.prompt_eval_count, p.num_ctx)
        if result.done_reason == "length" and result.eval_count < num_predict:
            # With shift: false the answer ends when prompt + answer fill num_ctx (llama-server
            # --no-context-shift, ollama llm/llama_server.go v0.33.0-rc2), before num_predict.
            return done(
                Status.FAILED,
                FailureClass.CONTEXT_TRUNCATED,
                f"the context filled during the answer ({result.prompt_eval_count} prompt + {result.eval_count} answer "
                f"tokens, num_ctx {p.num_ctx}); raise num_ctx or shorten the prompt",
            )
        if result.done_reason == "length":
            if result.thinking and not result.content:
                return done(
                    Status.FAILED,
                    FailureClass.OUTPUT_TRUNCATED,
                    f"the model spent all num_predict={num_predict} tokens thinking (done_reason 'length', no answer); "
                    "raise num_predict or use --think off",
                )
            if p.retry_output_truncated and not widened:
                widened, num_predict = True, min(num_predict * 2, p.num_ctx)
                continue
            return done(
                Status.FAILED,
                FailureClass.OUTPUT_TRUNCATED,
                f"answer stopped at num_predict={num_predict} tokens (done_reason 'length'); raise num_predict",
            )
        if answer_format is not None:
            problem = check_answer(result.content, answer_format)
            if problem is not None:
                invalid += 1
                if invalid < p.invalid_output_attempts:
                    continue
                return done(Status.FAILED, FailureClass.INVALID_OUTPUT, f"after {invalid} attempts: {problem}")
        return done(Status.OK)
