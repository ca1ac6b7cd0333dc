"""Writing one chat/generate answer while holding a slot: modelled sleeps, NDJSON or one object, faults.

Durations: prompt_eval_duration and eval_duration are the modelled times (`timing.py`) exactly, except
that the Go-runner eras count the first generated token as prompt time (era.py); total_duration is
measured from handler entry to the final line. Streaming sends one line per
`stream_chunk_tokens` tokens at the time the model would have produced them (absolute deadlines, so
sleep overshoot does not accumulate). A client that disconnects is recorded as 499 and its
generation stops (aiohttp cancels the handler). Only a complete `done: true` answer written to the
socket counts as answered.

Thinking tokens stream first (`message.thinking` / `thinking` with empty content), then the
content; both count in eval_count. A `stream_error` fault sends about half of the output, then one
`{"error": ...}` line inside the 200 (`v0.33.0-rc2:server/routes.go:2119-2123`); with `stream:
false` it is a 500 after the modelled time (`routes.go:2406-2418`). In the v0.30.0 era,
prompt_eval_count is only the tokens not found in the slot's cache (`era.py`). When the context
shifted during the answer (answer.py) the slot keeps the shifted context, /sim/stats counts it, and
the response carries the simulator-only header `X-Sim-Context-Shifts: N` (real Ollama gives no sign).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from chunkwise.harness.sim.answer import (
    Answer,
    chunk_body,
    final_cache,
    metrics,
    now_rfc3339,
    stream_lines,
    token_id,
)
from chunkwise.harness.sim.faults import STREAM_CRASH
from chunkwise.harness.sim.prompt import Prompt, generate_messages, render_messages
from chunkwise.harness.sim.request import CompletionRequest
from chunkwise.harness.sim.scheduler import Lease
from chunkwise.harness.sim.state import JSON_TYPE, NDJSON_TYPE, SimState
from chunkwise.harness.sim.templates import TEMPLATES
from chunkwise.harness.sim.timing import decode_ns, decode_slowdown, prefill_ns, prefill_stall_ns


class _Ndjson(web.StreamResponse):
    """A streamed response whose headers leave with the first body bytes (one send, not two).
    `_send_headers_immediately` is aiohttp's own switch for this (web.Response turns it off too);
    without it the only cost is an extra send."""

    _send_headers_immediately = False


class Responder:
    """A request holding a slot: sleeps the modelled time and writes the answer."""

    def __init__(self, request: web.Request, state: SimState, req: CompletionRequest, prompt: Prompt, answer: Answer,
                 lease: Lease, fault: str | None, t0: int, load_ns: int) -> None:
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
        n, cached, gen = len(prompt.tokens), lease.cached, answer.eval_count
        self.cached_tokens = cached
        self.prompt_count = n - cached if opts.era.uncached_count else n
        self.generated = answer.thinking + answer.tokens
        scale = opts.attention_scale_tokens
        self.prefill_ns = prefill_ns(cached, n - cached, opts.prefill_tps, scale)
        loaded = lease.loaded
        slowdown = decode_slowdown(loaded.active, loaded.key.parallel, opts.batch_gain, opts.decode_tps,
                                   opts.decode_batch_tps)
        self.decode: Callable[[int], int] = lambda k: round(decode_ns(n, k, opts.decode_tps, scale) * slowdown)
        # this prefill runs in the shared engine and delays the other busy slots' decoding (timing.py)
        if self.prefill_ns and loaded.active > 1:
            loaded.stall_ns += prefill_stall_ns(self.prefill_ns, opts.prefill_share)
        self._stall_seen = loaded.stall_ns
        self.eval_ns = self.decode(gen)

    def _record(self, status: int | str) -> None:
        if not self.recorded:
            self.recorded = True
            self.state.stats.record(self.request.path, status)

    async def execute(self) -> web.StreamResponse:
        cache, segments = self.prompt.tokens, self.prompt.segments
        try:
            if self.fault == "stall":
                self.state.stats.faults["stall"] += 1
                await asyncio.sleep(self.state.options.stall_s)
            if self.fault == "reset":
                return await self._reset()
            writer = self._stream if self.req.stream else self._single
            response = await writer()
            if self.answer.shifts:
                self.state.stats.context_shifts += self.answer.shifts
                keep = self.req.num_keep + (1 if self.req.profile and self.req.profile.adds_bos else 0)
                cache = final_cache(self.prompt.tokens, self.generated, self.lease.loaded.key.num_ctx, keep)
                segments = ()
            else:
                cache = self.prompt.tokens + self.generated
            return response
        except asyncio.CancelledError:
            self._record(499)
            raise
        except ConnectionError:
            self._record(499)
            raise asyncio.CancelledError from None
        finally:
            self.state.scheduler.release(self.lease, cache, segments)

    def _final(self) -> dict[str, Any]:
        req, answer = self.req, self.answer
        extra: dict[str, Any] = {}
        if req.kind == "generate" and not req.raw:
            extra["context"] = [token_id(t) for t in self.prompt_full_tokens() + answer.tokens]
        total = time.perf_counter_ns() - self.t0
        eval_ns = self.eval_ns + self._stalled()
        prompt_ns = self.prefill_ns
        if self.state.options.era.first_token_in_prompt and answer.eval_count:
            first = min(self.decode(1), eval_ns)  # the Go runners count the first token as prompt time
            prompt_ns, eval_ns = prompt_ns + first, eval_ns - first
        extra.update(metrics(total, self.load_ns, self.prompt_count, prompt_ns, answer.eval_count, eval_ns))
        thinking = "" if req.stream else answer.thinking_text
        content = "" if req.stream else answer.text
        return chunk_body(req, content, True, thinking=thinking, done_reason=answer.done_reason, **extra)

    def prompt_full_tokens(self) -> list[str]:
        """Ollama's `context` re-tokenizes the untruncated rendered prompt (research ollama.md section 1)."""
        template = TEMPLATES[self.req.profile.template if self.req.profile is not None else "llama3"]
        return render_messages(generate_messages(self.req.prompt, self.req.system), self.state.options.token_density,
                               template)

    def _stalled(self) -> int:
        """Nanoseconds other slots' prefills have delayed this request since it took its slot."""
        return int(self.lease.loaded.stall_ns - self._stall_seen)

    async def _sleep_until(self, start: float, offset_ns: int) -> None:
        delay = start + (offset_ns + self._stalled()) / 1e9 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    def _headers(self, response: web.StreamResponse) -> None:
        if self.answer.shifts:
            response.headers["X-Sim-Context-Shifts"] = str(self.answer.shifts)

    def _lines(self, start: int, end: int) -> bytes:
        """NDJSON lines for generated tokens start..end (thinking and content pieces apart)."""
        split = len(self.answer.thinking)
        created = now_rfc3339()
        step = self.state.options.stream_chunk_tokens
        data = b""
        for lo, hi, thinking in ((start, min(end, split), True), (max(start, split), end, False)):
            if lo >= hi:
                continue
            source = self.answer.thinking if thinking else self.answer.tokens
            offset = 0 if thinking else split
            tokens = source[lo - offset : hi - offset]
            pieces = tokens if step == 1 else ["".join(tokens[i : i + step]) for i in range(0, len(tokens), step)]
            data += stream_lines(self.req, pieces, created, thinking)
        return data

    async def _single(self) -> web.StreamResponse:
        start = time.perf_counter()
        await self._sleep_until(start, self.prefill_ns + self.eval_ns)
        if self.fault == "stream_error":
            self.state.stats.faults["stream_error"] += 1
            self._record(500)
            data = json.dumps({"error": STREAM_CRASH}).encode("utf-8")
            response = web.Response(body=data, status=500, content_type="application/json", charset="utf-8")
            await response.prepare(self.request)
            await response.write_eof()
            return response
        if self.fault in ("incomplete", "repeat"):
            self.state.stats.faults[self.fault] += 1
            kept = self.answer.tokens if self.fault == "repeat" else self.answer.tokens[: len(self.answer.tokens) // 2]
            body = chunk_body(self.req, "".join(kept), False)
        else:
            body = self._final()
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        response = web.Response(body=data, status=200, content_type="application/json", charset="utf-8")
        self._headers(response)
        await response.prepare(self.request)
        await response.write_eof()  # headers and body in one send; returns once handed to the socket
        self._done()
        return response

    async def _stream(self) -> web.StreamResponse:
        start = time.perf_counter()
        total, step = len(self.generated), self.state.options.stream_chunk_tokens
        ends = [*range(step, total, step), total] if total else []
        incomplete = self.fault in ("incomplete", "repeat")
        crash = self.fault == "stream_error"
        if self.fault is not None and (incomplete or crash):
            self.state.stats.faults[self.fault] += 1
            if self.fault != "repeat":  # a repeat abort sends every token it generated, then ends
                ends = ends[: max(1, len(ends) // 2)] if ends else []
        response = _Ndjson(status=200)
        response.content_type = NDJSON_TYPE
        self._headers(response)
        data = b""
        if self.prefill_ns == 0 and self.eval_ns == 0:  # nothing to wait for: one write
            data = self._lines(0, ends[-1]) if ends else b""
        else:
            previous = 0
            for end in ends:
                await self._sleep_until(start, self.prefill_ns + self.decode(end))
                if not response.prepared:
                    await response.prepare(self.request)
                await response.write(self._lines(previous, end))
                previous = end
            if not (incomplete or crash):
                await self._sleep_until(start, self.prefill_ns + self.eval_ns)
        if not response.prepared:
            await response.prepare(self.request)
        if crash:
            data += (json.dumps({"error": STREAM_CRASH}) + "\n").encode("utf-8")
        elif not incomplete:
            data += (json.dumps(self._final(), ensure_ascii=False) + "\n").encode("utf-8")
        await response.write_eof(data)
        if incomplete or crash:
            self._record(200)
        else:
            self._done()
        return response

    def _done(self) -> None:
        self._record(200)
        if self.fault not in ("incomplete", "stream_error", "repeat"):
            self.state.stats.answered(self.req.fingerprint)
            self.state.stats.prompt_tokens_cached += self.cached_tokens
            self.state.stats.prompt_tokens_evaluated += len(self.prompt.tokens) - self.cached_tokens

    async def _reset(self) -> web.StreamResponse:
        """Send the headers and about half of the body, then abort the TCP connection."""
        self.state.stats.faults["reset"] += 1
        start = time.perf_counter()
        await self._sleep_until(start, self.prefill_ns + self.eval_ns // 2)
        if self.req.stream:
            data = self._lines(0, max(1, len(self.generated) // 2)) if self.generated else b""
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
