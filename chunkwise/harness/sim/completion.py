"""POST /api/chat and /api/generate.

Order of work: parse (400), count the fingerprint's receipt, look up the model (404) and the other
fields (400), render and truncate the prompt (400 when it may not be cut), draw a fault (500 at
once), wait for a slot (503 only when a (re)load is needed and the load queue is full; 500 when the
model cannot load, `SimOptions.load_failure`), then sleep the modelled prefill and decode times and
write the answer (streamed NDJSON by default, one object with `stream: false`).

load_duration is measured from handler entry until the model was ready for this request (waiting
for in-flight requests before a reload, plus the load); the rest is `respond.Responder`'s.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from chunkwise.harness.sim.answer import chunk_body, make_answer
from chunkwise.harness.sim.faults import RUNNER_STOPPED, pick_fault
from chunkwise.harness.sim.prompt import Prompt, PromptTooLong, chat_prompt, generate_prompt
from chunkwise.harness.sim.request import ApiError, CompletionRequest, parse_head, parse_rest
from chunkwise.harness.sim.respond import Responder
from chunkwise.harness.sim.scheduler import LoadFailed, LoadKey, ServerBusy
from chunkwise.harness.sim.state import STATE, SimState


async def chat(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "chat")


async def generate(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "generate")


async def _complete(request: web.Request, kind: str) -> web.StreamResponse:
    t0 = time.perf_counter_ns()
    state = request.app[STATE]
    endpoint = request.path
    try:
        req = parse_head(kind, await request.read())
    except ApiError as exc:
        return state.error(endpoint, exc.status, exc.message)
    receipts_before = state.stats.receive(req.fingerprint)
    opts = state.options
    try:
        era = opts.era
        parse_rest(req, opts.keep_alive_default_s, era)
        profile = req.profile
        assert profile is not None  # parse_rest answered 404 otherwise
        num_ctx = max(4, min(req.num_ctx or opts.num_ctx_default, profile.context_length))
        key = LoadKey(profile.name, num_ctx, opts.parallel, opts.kv_cache_type, req.shift or not era.llama_server)
        if req.empty:
            return await _load_only(request, state, req, key, t0)
        prompt = _prompt(req, num_ctx, opts.truncation_mode, opts.token_density)
    except ApiError as exc:
        return state.error(endpoint, exc.status, exc.message)
    except PromptTooLong as exc:
        return state.error(endpoint, 400, str(exc))
    fault = pick_fault(opts, req.fingerprint, receipts_before)
    if fault == "error":
        state.stats.faults["error"] += 1
        return state.error(endpoint, 500, RUNNER_STOPPED)
    keep = req.num_keep + (1 if profile.adds_bos else 0)
    answer = make_answer(req, opts.answer_tokens, num_ctx, len(prompt.tokens), opts.token_density,
                         opts.thinking_tokens, keep)
    t_sched = time.perf_counter_ns()
    try:
        lease = await state.scheduler.acquire(key, profile, prompt.tokens, req.keep_alive_s, prompt.segments)
    except ServerBusy as exc:
        return state.error(endpoint, 503, str(exc))
    except LoadFailed as exc:
        return state.error(endpoint, 500, str(exc))
    except asyncio.CancelledError:
        state.stats.record(endpoint, 499)
        raise
    run = Responder(request, state, req, prompt, answer, lease, fault, t0, max(lease.loaded.ready_ns, t_sched) - t0)
    return await run.execute()


def _prompt(req: CompletionRequest, num_ctx: int, mode: str, density: float) -> Prompt:
    bos = req.profile is not None and req.profile.adds_bos
    if req.kind == "chat":
        return chat_prompt(req.messages, num_ctx, req.num_keep, bos, mode, req.truncate, density)
    return generate_prompt(req.prompt, req.system, req.raw, num_ctx, req.num_keep, bos, mode, req.truncate, density)


async def _load_only(
    request: web.Request, state: SimState, req: CompletionRequest, key: LoadKey, t0: int
) -> web.Response:
    """Empty prompt: load the model (done_reason "load"), or unload it with keep_alive 0 ("unload")."""
    sched = state.scheduler
    if req.keep_alive_given and req.keep_alive_s == 0:
        if sched.loaded is not None and sched.loaded.key.model == key.model and sched.loaded.active == 0:
            sched.unload()
        reason = "unload"
    else:
        try:
            assert req.profile is not None  # parse_rest answered 404 otherwise
            lease = await sched.acquire(key, req.profile, None, req.keep_alive_s)
        except ServerBusy as exc:
            return state.error(request.path, 503, str(exc))
        except LoadFailed as exc:
            return state.error(request.path, 500, str(exc))
        sched.release(lease, None)
        reason = "load"
    return state.json(request.path, 200, chunk_body(req, "", True, done_reason=reason))
