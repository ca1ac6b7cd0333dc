"""`SimState`: everything one simulated server holds (options, stats, scheduler)."""

from __future__ import annotations

import json

from aiohttp import web

from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.scheduler import Scheduler
from chunkwise.harness.sim.stats import SimStats

SIM_HEADER = ("X-Ollama-Simulator", "chunkwise")
JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"


class SimState:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.stats = SimStats()
        self.scheduler = Scheduler(lambda: self.options, self.stats)

    def json(self, endpoint: str, status: int, body: object, record: bool = True) -> web.Response:
        if record:
            self.stats.record(endpoint, status)
        data = json.dumps(body).encode("utf-8")
        return web.Response(status=status, body=data, content_type="application/json", charset="utf-8")

    def error(self, endpoint: str, status: int, message: str) -> web.Response:
        """Ollama's error shape: {"error": "..."}."""
        return self.json(endpoint, status, {"error": message})


STATE = web.AppKey("chunkwise_sim_state", SimState)
