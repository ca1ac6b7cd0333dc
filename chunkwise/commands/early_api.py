"""Start Prefect's temporary API server while the run is being checked and staged.

Without `PREFECT_API_URL`, Prefect starts a temporary ("ephemeral") API server in a subprocess the
first time a flow needs a client (`prefect.client.orchestration.get_client` ->
`SubprocessASGIServer().start()`, Prefect 3.9), and the first request waits for it: several
seconds of a cold Python process importing Prefect's server and checking its database. Started
here in a thread at the beginning of `chunkwise run`, that time overlaps the preflight (input scan,
server probe, staging, chunk plan); the flow later finds the same singleton server already running.
When the preflight fails, `cancel()` stops the server (or keeps it from starting), so a
configuration error still exits at once and leaves no process behind.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class EarlyApi:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = self._starting = False
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> EarlyApi:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():  # a configured API (a real server, the tests' harness) needs nothing
            self._thread = threading.Thread(target=self._run, name="chunkwise-prefect-api", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        from prefect.server.api.server import SubprocessASGIServer

        with self._lock:
            if self._cancelled:
                return
            self._starting = True
            self._server = SubprocessASGIServer()
        try:
            self._server.start()
        except Exception:  # noqa: BLE001 - the flow starts it again and reports the failure itself
            return

    def wait(self) -> None:
        """Block until the server is up (or its start failed: the flow will then try and report)."""
        if self._thread is not None:
            self._thread.join()

    def cancel(self) -> None:
        """The run will not start: stop the server, or keep it from starting."""
        with self._lock:
            self._cancelled = True
            starting, server = self._starting, self._server
        if not starting:
            return
        deadline = time.monotonic() + 10  # start() launches the process right after picking a free port
        while server.server_process is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if server.server_process is not None:
            server.server_process.terminate()
            server.server_process.wait(timeout=10)
