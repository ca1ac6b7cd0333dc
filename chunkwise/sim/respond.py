"""Writing one chat/generate answer while holding a slot: modelled sleeps, NDJSON or one object, faults.

Durations: prompt_eval_duration and eval_duration are the modelled times (`timing.py`) exactly;
total_duration is measured from handler entry to the final line. Streaming sends one line per
`stream_chunk_tokens` tokens at the time the model would have produced them (absolute deadlines, so
sleep overshoot does not accumulate). A client that disconnects is recorded as 499 and its
generation stops (aiohttp cancels the handler). Only a complete `done: true` answer written to the
socket counts as answered.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from chunkwise.sim.answer import Answer, chunk_body, metrics, now_rfc3339, stream_lines, token_id
from chunkwise.sim.prompt import Prompt, generate_messages, render_messages
from chunkwise.sim.request import CompletionRequest
from chunkwise.sim.scheduler import Lease
from chunkwise.sim.state import JSON_TYPE, NDJSON_TYPE, SimState
from chunkwise.sim.timing import decode_ns, prefill_ns


class _Ndjson(web.StreamResponse):
    """A streamed response whose headers leave with the first body bytes (one send, not two).
    `_send_headers_immediately` is aiohttp's own switch for this (web.Response turns it off too);
    without it the only cost is an extra send."""

    _send_headers_immediately = False


class Responder:
    """A request holding a slot: sleeps the modelled time and writes the answer."""

    def __init__(self, request, state, req, prompt, answer, lease, fault, t0, load_ns) -> None:
        self.request: web.Request = request
        self.state: SimState = state
        self.req: CompletionRequest = req
        self.prompt: Prompt = prompt
        self.answer: Answer = answer
        self.lease: Lease = lease
        self.fault: str | None = fault
        self.t0, self.load_ns = t0, load_ns
        self.recorded = False
        opts = state.options
        n, cached, gen = len(prompt.tokens), lease.cached, len(answer.tokens)
        scale = opts.attention_scale_tokens
        self.prefill_ns = prefill_ns(cached, n - cached, opts.prefill_tps, scale)
        self.decode = lambda k: decode_ns(n, k, opts.decode_tps, scale)
        self.eval_ns = self.decode(gen)

    def _record(self, status: int | str) -> None:
        if not self.recorded:
            self.recorded = True
            self.state.stats.record(self.request.path, status)

    async def execute(self) -> web.StreamResponse:
        cache = self.prompt.tokens
        try:
            if self.fault == "stall":
                self.state.stats.faults["stall"] += 1
                await asyncio.sleep(self.state.options.stall_s)
            if self.fault == "reset":
                return await self._reset()
            writer = self._stream if self.req.stream else self._single
            response = await writer()
            cache = self.prompt.tokens + self.answer.tokens
            return response
        except asyncio.CancelledError:
            self._record(499)
            raise
        except ConnectionError:
            self._record(499)
            raise asyncio.CancelledError from None
        finally:
            self.state.scheduler.release(self.lease, cache)

    def _final(self) -> dict:
        req, answer = self.req, self.answer
        extra = {}
        if req.kind == "generate" and not req.raw:
            extra["context"] = [token_id(t) for t in self.prompt_full_tokens() + answer.tokens]
        total = time.perf_counter_ns() - self.t0
        extra.update(metrics(total, self.load_ns, len(self.prompt.tokens), self.prefill_ns, len(answer.tokens), self.eval_ns))
        return chunk_body(req, "" if req.stream else answer.text, True, done_reason=answer.done_reason, **extra)

    def prompt_full_tokens(self) -> list[str]:
        """Ollama's `context` re-tokenizes the untruncated rendered prompt (research ollama.md section 1)."""
        return render_messages(generate_messages(self.req.prompt, self.req.system))

    async def _sleep_until(self, start: float, offset_ns: int) -> None:
        delay = start + offset_ns / 1e9 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _single(self) -> web.StreamResponse:
        start = time.perf_counter()
        await self._sleep_until(start, self.prefill_ns + self.eval_ns)
        if self.fault == "incomplete":
            self.state.stats.faults["incomplete"] += 1
            half = self.answer.tokens[: len(self.answer.tokens) // 2]
            body = chunk_body(self.req, "".join(half), False)
        else:
            body = self._final()
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        response = web.Response(body=data, status=200, content_type="application/json", charset="utf-8")
        await response.prepare(self.request)
        await response.write_eof()  # headers and body in one send; returns once handed to the socket
        self._done()
        return response

    async def _stream(self) -> web.StreamResponse:
        start = time.perf_counter()
        tokens, step = self.answer.tokens, self.state.options.stream_chunk_tokens
        ends = list(range(step, len(tokens), step)) + [len(tokens)] if tokens else []
        incomplete = self.fault == "incomplete"
        if incomplete:
            self.state.stats.faults["incomplete"] += 1
            ends = ends[: max(1, len(ends) // 2)] if ends else []
        response = _Ndjson(status=200)
        response.content_type = NDJSON_TYPE
        data = b""
        if self.prefill_ns == 0 and self.eval_ns == 0:  # nothing to wait for: one write
            pieces = tokens[: len(ends)] if step == 1 else ["".join(tokens[a:b]) for a, b in zip([0] + ends[:-1], ends)]
            data = stream_lines(self.req, pieces, now_rfc3339())
        else:
            previous = 0
            for end in ends:
                await self._sleep_until(start, self.prefill_ns + self.decode(end))
                if not response.prepared:
                    await response.prepare(self.request)
                await response.write(stream_lines(self.req, ["".join(tokens[previous:end])], now_rfc3339()))
                previous = end
            await self._sleep_until(start, self.prefill_ns + self.eval_ns)
        if not response.prepared:
            await response.prepare(self.request)
        if not incomplete:
            data += (json.dumps(self._final(), ensure_ascii=False) + "\n").encode("utf-8")
        await response.write_eof(data)
        if incomplete:
            self._record(200)
        else:
            self._done()
        return response

    def _done(self) -> None:
        self._record(200)
        if self.fault != "incomplete":
            self.state.stats.answered(self.req.fingerprint)

    async def _reset(self) -> web.StreamResponse:
        """Send the headers and about half of the body, then abort the TCP connection."""
        self.state.stats.faults["reset"] += 1
        start = time.perf_counter()
        await self._sleep_until(start, self.prefill_ns + self.eval_ns // 2)
        if self.req.stream:
            half = self.answer.tokens[: max(1, len(self.answer.tokens) // 2)]
            data = stream_lines(self.req, list(half), now_rfc3339())
        else:
            data = json.dumps(self._final(), ensure_ascii=False).encode("utf-8")
            data = data[: len(data) // 2]
        response = web.StreamResponse(status=200)
        response.content_type = NDJSON_TYPE if self.req.stream else JSON_TYPE
        if not self.req.stream:
            response.content_length = len(data) * 2 + 1
        await response.prepare(self.request)
        await response.write(data)
        self._record("reset")
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError
