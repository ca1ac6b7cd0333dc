"""The one way tests, the demo and benchmarks start a simulator: `running_simulator`.

    with running_simulator(SimOptions(parallel=4), process=False) as sim:
        httpx.post(f"{sim.url}/api/chat", json=...)
        sim.configure(fail_rate=0.2)
        sim.stop(); sim.start()          # "Ollama down for a while", same port
        sim.restart_with(load_failure="none")  # down, then up with other options
        assert sim.stats()["answered_total"] == ...

In-process mode (default) runs the aiohttp app on its own event loop in a daemon thread; stats
survive `stop()`/`start()` (the model is unloaded, as after a restart). `process=True` runs
`python -m chunkwise sim` as a subprocess (a separate CPU and GIL, as the benchmarks need); a
restarted process starts with empty stats. Port 0 (the harness default) picks a free port, which
`start()` reuses.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

from chunkwise.harness.sim.options import SimOptions, flag_for

if TYPE_CHECKING:
    from aiohttp import web

    from chunkwise.harness.sim.state import SimState

STARTUP_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cli_args(options: SimOptions) -> list[str]:
    """`chunkwise sim` flags reproducing `options` (only the fields that differ from the defaults)."""
    defaults = SimOptions()
    args: list[str] = []
    for name in SimOptions.model_fields:
        value = getattr(options, name)
        if value == getattr(defaults, name):
            continue
        if isinstance(value, tuple):
            value = f"{value[0]}:{value[1]}"
        args += [flag_for(name), str(value)]
    return args


class SimHandle:
    """A running simulator. `url` is its base URL (no trailing slash)."""

    def __init__(self, options: SimOptions, process: bool) -> None:
        self.options = options
        self.process = process
        self.url = ""
        self._client = httpx.Client(timeout=30.0, trust_env=False)
        self._state: SimState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process serving requests: the `chunkwise sim` child, or this process in-process."""
        return self._proc.pid if self._proc is not None else os.getpid()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bring the server (back) up, on the same port as before."""
        if self.process:
            self._start_process()
        else:
            self._start_thread()

    def stop(self) -> None:
        """Take the server down: the port refuses connections and open connections are dropped."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._runner is not None and self._loop is not None:
            from chunkwise.harness.sim.server import stop_server

            asyncio.run_coroutine_threadsafe(stop_server(self._runner), self._loop).result(timeout=30)
            self._runner = None

    def restart_with(self, **changes: Any) -> None:
        """Stop, change options (e.g. a failing server becomes healthy), start again on the same port."""
        self.stop()
        self.options = self.options.updated(changes)
        if self._state is not None:
            self._state.options = self._state.options.updated(changes)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None
        self._client.close()

    def _start_thread(self) -> None:
        from chunkwise.harness.sim.server import start_server
        from chunkwise.harness.sim.state import SimState

        if self._runner is not None:
            return
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="chunkwise-sim", daemon=True)
            self._thread.start()
        if self._state is None:
            self._state = SimState(self.options)
        future = asyncio.run_coroutine_threadsafe(start_server(self.options, self._state), self._loop)
        self._runner, self.url = future.result(timeout=STARTUP_TIMEOUT_S)
        self._pin_port()

    def _start_process(self) -> None:
        if self._proc is not None:
            return
        if self.options.port == 0:
            self.options = self.options.updated({"port": free_port(self.options.host)})
        cmd = [sys.executable, "-m", "chunkwise", "sim", *cli_args(self.options)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://{self.options.host}:{self.options.port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else ""
                self._proc = None
                raise RuntimeError(f"chunkwise sim exited with {cmd}: {err.splitlines()[-1] if err else 'no output'}")
            try:
                if self._client.get(f"{self.url}/api/version", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chunkwise sim did not answer on {self.url} within {STARTUP_TIMEOUT_S:.0f} s")

    def _pin_port(self) -> None:
        port = int(self.url.rsplit(":", 1)[1])
        if self.options.port != port:
            self.options = self.options.updated({"port": port})
            if self._state is not None:
                self._state.options = self._state.options.updated({"port": port})

    # -- inspection --------------------------------------------------------------------------
    def stats(self, fingerprints: bool = True, skip_leases: int | None = None) -> dict[str, Any]:
        """GET /sim/stats (see chunkwise.harness.sim.stats for the shape)."""
        params = {} if fingerprints else {"fingerprints": "0"}
        if skip_leases is not None:
            params["skip_leases"] = str(skip_leases)
        return self._checked(self._client.get(f"{self.url}/sim/stats", params=params))

    def reset(self) -> None:
        """POST /sim/reset: clear stats, unload the model, empty the slots."""
        self._checked(self._client.post(f"{self.url}/sim/reset"))

    def configure(self, **changes: Any) -> dict[str, Any]:
        """POST /sim/config; returns the options now in force. Changes survive stop()/start()."""
        changes = {k: list(v) if isinstance(v, tuple) else v for k, v in changes.items()}
        config = self._checked(self._client.post(f"{self.url}/sim/config", json=changes))
        self.options = SimOptions.model_validate({**config, "port": self.options.port})
        return config

    @staticmethod
    def _checked(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise RuntimeError(f"simulator answered {response.status_code} to {response.request.url}: {response.text}")
        body: dict[str, Any] = response.json()
        return body


@contextmanager
def running_simulator(options: SimOptions | None = None, *, process: bool = False) -> Iterator[SimHandle]:
    """A started simulator, stopped on exit. The port is 0 (a free one) unless `options` sets it explicitly."""
    options = options or SimOptions()
    if "port" not in options.model_fields_set:
        options = options.updated({"port": 0})
    handle = SimHandle(options, process)
    try:
        handle.start()
        yield handle
    finally:
        handle.close()
