"""POST /api/chat and /api/generate.

Order of work, as in Ollama (`v0.24.0:server/routes.go:2178-2440`): bind the body and name a model
(400), count the fingerprint's receipt, look up the model (404); an empty prompt with keep_alive 0
unloads the model and answers `done_reason: "unload"` before anything else is checked (`routes.go:
2242-2253`); check `think` (400) and the options (500, request.py); draw a fault (500 at once); wait
for a slot (503 only when a (re)load is needed and the load queue is full; 500 when the model cannot
load); an empty prompt answers `done_reason: "load"`. Only then is the template rendered (a poisoned
request: 500, `v0.24.0:server/routes.go:2432-2436`) and does the runner see the prompt: an
over-long prompt with `truncate: false` is a 400 and a `format` that is neither "json" nor a schema a
500 (`llm/server.go:1583-1594`), both with the model loaded. Otherwise sleep the modelled prefill and
decode times and write the answer (streamed NDJSON by default, one object with `stream: false`).

A streamed request whose error comes before its first line gets the error as a JSON object with the
Content-Type `application/json` that `streamResponse` sets (`routes.go:1953-1976`), not gin's usual
`application/json; charset=utf-8`.

load_duration is measured from handler entry until the model was ready for this request (waiting
for in-flight requests before a reload, plus the load); the rest is `respond.Responder`'s.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from chunkwise.harness.sim.answer import Answer, chunk_body, make_answer
from chunkwise.harness.sim.faults import POISON_ERROR, REPEAT_LIMIT, RUNNER_STOPPED, persistent_fault, pick_fault
from chunkwise.harness.sim.prompt import Prompt, PromptTooLong, chat_prompt, generate_prompt, refusal_text
from chunkwise.harness.sim.request import (
    ApiError,
    CompletionRequest,
    parse_head,
    parse_options,
    parse_rest,
    parse_think,
)
from chunkwise.harness.sim.respond import Responder
from chunkwise.harness.sim.scheduler import LoadFailed, LoadKey, ServerBusy
from chunkwise.harness.sim.state import STATE, SimState
from chunkwise.harness.sim.templates import TEMPLATES


async def chat(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "chat")


async def generate(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "generate")


def _stream_error(state: SimState, endpoint: str, status: int, message: str) -> web.Response:
    """An error of a streamed request that comes before its first line (`streamResponse`)."""
    state.stats.record(endpoint, status)
    return web.Response(status=status, body=json.dumps({"error": message}).encode("utf-8"),
                        headers={"Content-Type": "application/json"})


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
        if req.empty and req.keep_alive_given and req.keep_alive_s == 0:
            return _unload(request, state, req)
        req.think = parse_think(req.body, profile, req.model, era)
        parse_options(req)
        num_ctx = max(4, min(req.num_ctx or opts.num_ctx_default, profile.context_length))
        key = LoadKey(profile.name, num_ctx, opts.parallel, opts.kv_cache_type, req.shift or not era.llama_server)
        if req.empty:
            return await _load_only(request, state, req, key, t0)
        prompt, too_long = _prompt(req, num_ctx, opts.truncation_mode, opts.token_density)
    except ApiError as exc:
        return state.error(endpoint, exc.status, exc.message)
    persistent = persistent_fault(opts, req.fingerprint, req.temperature, req.num_predict)
    fault = "repeat" if persistent == "repeat" else pick_fault(opts, req.fingerprint, receipts_before)
    if fault == "error":
        state.stats.faults["error"] += 1
        return state.error(endpoint, 500, RUNNER_STOPPED)
    keep = req.num_keep + (1 if profile.adds_bos else 0)
    answer = make_answer(req, opts.answer_tokens, num_ctx, len(prompt.tokens), opts.token_density,
                         opts.thinking_tokens, keep, unbounded_zero=era.zero_predict_unbounded)
    if fault == "repeat":  # greedy decoding repeats one token: Ollama stops after REPEAT_LIMIT + 1 of them
        answer = Answer([(answer.tokens or ["a"])[0]] * (REPEAT_LIMIT + 1), "", [])
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
    refusal = ((500, POISON_ERROR) if persistent == "poison"
               else (400, refusal_text(too_long, num_ctx, era.llama_server)) if too_long is not None
               else (500, req.bad_format) if req.bad_format else None)
    if refusal is not None:  # the template or the runner refuses the prompt: the slot was never used
        if persistent == "poison":
            state.stats.faults["poison"] += 1
        state.scheduler.release(lease, None)
        if req.stream:
            return _stream_error(state, endpoint, refusal[0], refusal[1])
        return state.error(endpoint, refusal[0], refusal[1])
    run = Responder(request, state, req, prompt, answer, lease, fault, t0, max(lease.loaded.ready_ns, t_sched) - t0)
    return await run.execute()


def _prompt(req: CompletionRequest, num_ctx: int, mode: str, density: float) -> tuple[Prompt, int | None]:
    """The prompt the model evaluates, and, for an over-long one the runner refuses, its length in tokens."""
    profile = req.profile
    bos = profile is not None and profile.adds_bos
    template = TEMPLATES[profile.template if profile is not None else "llama3"]
    try:
        if req.kind == "chat":
            return chat_prompt(req.messages, num_ctx, req.num_keep, bos, mode, req.truncate, density, template), None
        return generate_prompt(req.prompt, req.system, req.raw, num_ctx, req.num_keep, bos, mode, req.truncate,
                               density, template), None
    except PromptTooLong as exc:
        return Prompt([], 0), exc.tokens


def _unload(request: web.Request, state: SimState, req: CompletionRequest) -> web.Response:
    """Empty prompt with keep_alive 0: unload the model once idle (`routes.go:2242-2253`)."""
    sched = state.scheduler
    assert req.profile is not None
    loaded = sched.loaded
    if loaded is not None and loaded.key.model == req.profile.name:
        if loaded.active == 0:
            sched.unload()
        else:
            loaded.session_s = 0  # unloads when its last request ends (scheduler.release)
    return state.json(request.path, 200, chunk_body(req, "", True, done_reason="unload"))


async def _load_only(
    request: web.Request, state: SimState, req: CompletionRequest, key: LoadKey, t0: int
) -> web.Response:
    """Empty prompt: load the model (done_reason "load")."""
    sched = state.scheduler
    try:
        assert req.profile is not None  # parse_rest answered 404 otherwise
        lease = await sched.acquire(key, req.profile, None, req.keep_alive_s)
    except ServerBusy as exc:
        return state.error(request.path, 503, str(exc))
    except LoadFailed as exc:
        return state.error(request.path, 500, str(exc))
    sched.release(lease, None)
    return state.json(request.path, 200, chunk_body(req, "", True, done_reason="load"))
