"""The simulator's aiohttp application: Ollama's endpoints plus /sim/* inspection.

Ollama endpoints: GET / and /api/version, GET /api/tags, POST /api/show, GET /api/ps,
POST /api/chat, POST /api/generate (`completion.py`), and OpenAI's POST /v1/chat/completions and
GET /v1/models (`openai_compat.py`). Simulator endpoints (not in Ollama):
GET /sim/stats[?fingerprints=0][&skip_leases=K] (K adds `slots_after_skipped`: `SimStats.slots_after`),
POST /sim/reset, GET|POST /sim/config (switching `load_failure` on unloads the model, as a runner that died;
switching it to "none" makes the server healthy again).

Every response carries `X-Ollama-Simulator: chunkwise`, and /api/version adds
`"simulator": "chunkwise"`, so the simulator can never pass for a real server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from chunkwise.harness.sim import completion, openai_compat
from chunkwise.harness.sim.gguf_view import show_body
from chunkwise.harness.sim.gojson import SHOW_FIELDS, BindError, bind, decode
from chunkwise.harness.sim.options import STARTUP_ONLY, SimOptions
from chunkwise.harness.sim.profiles import PROFILES, resolve
from chunkwise.harness.sim.request import ApiError, parse_json
from chunkwise.harness.sim.state import SIM_HEADER, STATE, SimState

#: Go's time.Duration(math.MaxInt64): what Ollama adds to "now" for a negative keep_alive.
FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)


def _iso(epoch_s: float | None) -> str:
    moment = datetime.now(UTC) + FOREVER if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running (chunkwise simulator)")


async def version(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return state.json(request.path, 200, {"version": state.options.ollama_version, "simulator": "chunkwise"})


async def tags(request: web.Request) -> web.Response:
    """GET /api/tags: every profile, most recently modified first (`v0.24.0:server/routes.go:1433-1482`); from
    the model-list cache's era on with context and embedding lengths and capabilities (`era.py` list_cache)."""
    options = request.app[STATE].options
    models = []
    for p in sorted(PROFILES.values(), key=lambda p: p.modified_at, reverse=True):
        entry: dict[str, Any] = {"name": p.name, "model": p.name, "modified_at": p.modified_at,
                                 "size": p.weights_bytes, "digest": p.build_digest(options.model_build),
                                 "details": p.details()}
        if options.era.list_cache:
            entry["details"].update(context_length=p.context_length, embedding_length=p.embedding_length)
            entry["capabilities"] = list(p.capabilities)
        models.append(entry)
    return request.app[STATE].json(request.path, 200, {"models": models})


async def show(request: web.Request) -> web.Response:
    """POST /api/show (`v0.24.0:server/routes.go:1117-1205`): the body binds to ShowRequest (400), a model
    is required (400) and must exist (404); the answer is `gguf_view.show_body`."""
    state = request.app[STATE]
    try:
        body = bind(decode(await request.read()), "ShowRequest", SHOW_FIELDS)
    except BindError as exc:
        return state.error(request.path, 400, str(exc))
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        return state.error(request.path, 400, "model is required")
    profile = resolve(name)
    era = state.options.era
    if profile is None:  # from 0.30 named with its tag (`era.py` show_display_name)
        shown = name if not era.show_display_name or ":" in name.rpartition("/")[2] else f"{name}:latest"
        return state.error(request.path, 404, f"model '{shown}' not found")
    state.stats.record(request.path, 200)
    body_bytes = show_body(profile.name, bool(body.get("verbose")), parent_blob=not era.create_copies_gguf)
    return web.Response(body=body_bytes, content_type="application/json", charset="utf-8")


async def ps(request: web.Request) -> web.Response:
    state = request.app[STATE]
    models = state.scheduler.ps()
    for entry in models:
        entry["expires_at"] = _iso(entry["expires_at"])
    return state.json(request.path, 200, {"models": models})


async def sim_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    with_fps = request.query.get("fingerprints", "1") not in ("0", "false", "no")
    loaded = state.scheduler.loaded
    body = state.stats.as_dict(
        fingerprints=with_fps,
        in_flight=state.scheduler.in_flight,
        queued=state.scheduler.queued,
        loaded_model=None if loaded is None else {"model": loaded.key.model, "num_ctx": loaded.key.num_ctx},
        slots=state.stats.slots(state.options.parallel),
    )
    skip = request.query.get("skip_leases")
    if skip is not None and skip.isdigit():
        body["slots_after_skipped"] = state.stats.slots_after(state.options.parallel, int(skip))
    return state.json(request.path, 200, body, record=False)


async def sim_reset(request: web.Request) -> web.Response:
    """Clear stats and fingerprint counts, unload the model, empty the slots."""
    state = request.app[STATE]
    state.stats.clear()
    state.scheduler.reset()
    return state.json(request.path, 200, {"reset": True}, record=False)


async def sim_config(request: web.Request) -> web.Response:
    """GET: current options. POST {field: value, ...}: change options at runtime (except host/port)."""
    state = request.app[STATE]
    if request.method == "POST":
        try:
            changes = parse_json(await request.read())
        except ApiError as exc:
            return state.json(request.path, exc.status, {"error": exc.message}, record=False)
        fixed = sorted(set(changes) & set(STARTUP_ONLY))
        if fixed:
            error = {"error": f"{', '.join(fixed)} cannot change while running"}
            return state.json(request.path, 400, error, record=False)
        try:
            state.options = state.options.updated(changes)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            return state.json(request.path, 400, {"error": f"{where}: {first['msg']}"}, record=False)
        if state.options.load_failure != "none" and {"load_failure", "oom_num_ctx"} & set(changes):
            state.scheduler.reset()  # the runner died: the next request has to load the model (and fails)
    return state.json(request.path, 200, state.options.model_dump(mode="json"), record=False)


async def _add_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SIM_HEADER[0]] = SIM_HEADER[1]


def create_app(options: SimOptions | None = None, state: SimState | None = None) -> web.Application:
    """The aiohttp application; pass `state` to keep stats across a stop/start."""
    app = web.Application(client_max_size=1024**3)
    app[STATE] = state or SimState(options or SimOptions())
    app.on_response_prepare.append(_add_header)
    app.router.add_get("/", root)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/show", show)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/chat", completion.chat)
    app.router.add_post("/api/generate", completion.generate)
    app.router.add_post("/v1/chat/completions", openai_compat.chat_completions)
    app.router.add_get("/v1/models", openai_compat.models)
    app.router.add_get("/sim/stats", sim_stats)
    app.router.add_post("/sim/reset", sim_reset)
    app.router.add_route("*", "/sim/config", sim_config)
    return app


async def start_server(options: SimOptions, state: SimState | None = None) -> tuple[web.AppRunner, str]:
    """Start serving on options.host:options.port; returns the runner (for `.cleanup()`) and the base URL.

    Handlers are cancelled when their client disconnects (Ollama cancels generation then)."""
    app = create_app(options, state)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = site._server
    assert server is not None and isinstance(server, asyncio.Server)  # started above
    port = int(server.sockets[0].getsockname()[1])  # the real port when options.port is 0
    host = options.host if ":" not in options.host else f"[{options.host}]"
    return runner, f"http://{host}:{port}"


async def stop_server(runner: web.AppRunner) -> None:
    """Close the listener and every open connection; the model counts as unloaded (a stopped server)."""
    state = runner.app[STATE]
    await runner.cleanup()
    state.scheduler.reset()
