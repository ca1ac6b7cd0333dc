"""Minimal loopback HTTP for starting and measuring the engine: stdlib only (no proxies, no
environment), so `chunkwise.harness.llama_server` and `chunkwise measure --local-engine` also run on a machine
that has Python and pynvml but not chunkwise's dependencies (the GPU check, scripts/gpu_measure.sh).
Runs use the OpenAI client (chunkwise/openai/), not this."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of GET `url`; an HTTP error status is returned, not raised. OSError when
    nothing answers (connection refused, timeout)."""
    try:
        with _OPENER.open(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_json(url: str, body: dict[str, Any], timeout_s: float = 900.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of POST `url` with a JSON body; a non-JSON answer becomes
    {"error": {"message": <its first 300 characters>}}."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"error": {"message": raw[:300].decode(errors="replace")}}
