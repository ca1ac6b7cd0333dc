"""One request from first attempt to a final outcome, applying each failure class's policy
(see `chunkwise.store.records`). Prompt and answer text are never logged above DEBUG.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from chunkwise.errors import ContextExceeded, FatalError, LLMError, RunInterrupted, ServerUnavailable, TransientError
from chunkwise.logs import logger
from chunkwise.run.context import RunContext, Runtime
from chunkwise.run.structured import check_answer
from chunkwise.settings import get_settings
from chunkwise.store.records import FailureClass, Status, outcome

_debug = logging.getLogger("chunkwise.run.send")


def log():
    return logger("chunkwise.run.send")


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with +-50 % jitter: base x 2^(attempt-1), capped, then jittered."""
    return min(max_s, base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


def check_running(rt: Runtime) -> None:
    if rt.fatal is not None:
        raise RunInterrupted(f"stopped: another chunk hit a fatal error: {rt.fatal}")
    if rt.stop.is_set():
        raise RunInterrupted("stopped on request (Ctrl-C or SIGTERM); resume with the same run name")


def send(
    ctx: RunContext,
    rt: Runtime,
    *,
    row: int,
    chunk: int,
    messages: list[dict[str, str]],
) -> dict[str, Any]:
    """Send one chat request until it has a final outcome record.

    Raises `ServerUnavailable` when the server stays unreachable (the chunk task is then retried
    by Prefect later, and nothing is recorded for this request), `FatalError` to stop the run, and
    `RunInterrupted` when the run is stopping.
    """
    p = ctx.params
    settings = get_settings()
    prompt_chars = sum(len(m["content"]) for m in messages)
    num_predict = p.num_predict
    attempts = transient = invalid = 0
    widened = False
    last: dict[str, Any] = {}

    def done(status: Status, error: FailureClass | None = None, message: str | None = None) -> dict[str, Any]:
        return outcome(
            _row=row, chunk=chunk, attempts=attempts, status=str(status), prompt_chars=prompt_chars,
            expected_prompt_tokens=rt.estimator.expected_tokens(prompt_chars),
            error_class=str(error) if error else None, error_message=message, **last,
        )

    while True:
        check_running(rt)
        attempts += 1
        try:
            result = rt.client.chat(
                p.model,
                messages,
                # An invalid answer is re-drawn with the next seed: the same seed would repeat it.
                options={**ctx.options(num_predict), "seed": p.seed + invalid},
                keep_alive=p.keep_alive,
                format=p.format,
                truncate=False if ctx.send_truncate_false else None,
            )
        except ContextExceeded as exc:
            return done(Status.FAILED, FailureClass.CONTEXT_TRUNCATED, f"{exc}; raise num_ctx or shorten the prompt")
        except FatalError as exc:
            rt.fatal = rt.fatal or exc.at(row=row)
            raise
        except TransientError as exc:
            transient += 1
            if transient >= p.max_attempts:
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
        last = {
            "response": result.content,
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
        if rt.estimator.is_truncated(prompt_chars, result.prompt_eval_count, p.num_ctx):
            expected = rt.estimator.expected_tokens(prompt_chars)
            return done(
                Status.FAILED,
                FailureClass.CONTEXT_TRUNCATED,
                f"Ollama evaluated {result.prompt_eval_count} prompt tokens but about {expected} were sent "
                f"(num_ctx {p.num_ctx}): the prompt was cut silently; raise num_ctx or shorten the prompt",
            )
        rt.estimator.observe(prompt_chars, result.prompt_eval_count, p.num_ctx)
        if result.done_reason == "length":
            if p.retry_output_truncated and not widened:
                widened, num_predict = True, min(num_predict * 2, p.num_ctx)
                continue
            return done(
                Status.FAILED,
                FailureClass.OUTPUT_TRUNCATED,
                f"answer stopped at num_predict={num_predict} tokens (done_reason 'length'); raise num_predict",
            )
        if p.format is not None:
            problem = check_answer(result.content, p.format)
            if problem is not None:
                invalid += 1
                if invalid < p.invalid_output_attempts:
                    continue
                return done(Status.FAILED, FailureClass.INVALID_OUTPUT, f"after {invalid} attempts: {problem}")
        return done(Status.OK)
