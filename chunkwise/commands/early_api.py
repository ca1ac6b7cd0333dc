"""Start Prefect's temporary API server while the run is being checked and staged.

Without `PREFECT_API_URL`, Prefect starts a temporary ("ephemeral") API server in a subprocess the
first time a flow needs a client (`prefect.client.orchestration.get_client` ->
`prefect.server.api.server.SubprocessASGIServer().start()`, Prefect 3.9), and the first request
waits for it: several seconds of a cold Python process importing Prefect's server and creating or
checking its database. Started here in a thread at the beginning of `chunkwise run`, that time
overlaps the preflight (input scan, server probe, staging, chunk plan).

The server is launched with the command and environment `SubprocessASGIServer._run_uvicorn_command`
uses (Prefect 3.9.1), without importing `prefect.server.api.server` in this process: that module
pulls in Prefect's whole server (FastAPI, SQLAlchemy, every API router), about 5 s of CPU on a
2-core machine, in the process that is meanwhile running the preflight, only to reach a class that
launches a subprocess. Once it answers `/health`, `wait()` sets `PREFECT_API_URL` to it and
refreshes Prefect's global settings context, so the flow, its task runs and its log and event
clients use it as a configured API (the client treats a configured server and the ephemeral one
alike, `ServerType` only differs for Prefect Cloud). It is stopped when this process exits, as
Prefect stops its own, and, unlike Prefect's own, also when this process is killed with SIGKILL
(no atexit runs then): `chunkwise.lifeline.tie` gives it a keeper that stops it once this process
is gone, so runs killed and started again do not pile up servers holding ports and the database.
When the preflight fails, `cancel()` stops it (or keeps it from starting), so a configuration error
still exits at once and leaves no process behind. If it cannot start, nothing is set and the flow
starts Prefect's own (and reports a failure itself; that one has no keeper). While the server
process starts, another thread imports the flow module, so that cost overlaps it too.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import random
import socket
import subprocess
import sys
import threading
import time

import httpx

from chunkwise.lifeline import tie

#: Prefect's own port range and exit code for "address in use" (uvicorn exits 3 when it cannot bind).
PORTS = range(8000, 9000)
PORT_IN_USE_EXIT = 3


def free_port() -> int:
    """A loopback port in Prefect's range that is free now (uvicorn may still lose a race for it)."""
    for _ in range(50):
        port = random.choice(PORTS)
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for Prefect's temporary API server in 8000-8999")


def _import_quietly(name: str) -> None:
    with contextlib.suppress(Exception):
        importlib.import_module(name)


class EarlyApi:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._importer: threading.Thread | None = None

    def start(self) -> EarlyApi:
        self._thread = threading.Thread(target=self._run, name="chunkwise-prefect-api", daemon=True)
        self._thread.start()
        return self

    def _launch(self, port: int, settings_env: dict[str, str]) -> subprocess.Popen[bytes]:
        import prefect

        server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "error", "--lifespan", "on"]
        # tied to this process: a SIGKILLed run (no atexit) must not leave the server running (lifeline.py)
        return tie(subprocess.Popen(argv, env={**os.environ, **server_env, **settings_env}), grace_s=5)

    def _run(self) -> None:
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_SERVER_EPHEMERAL_ENABLED,
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
            get_current_settings,
        )

        # a configured API (a real server, the tests' harness) needs nothing; without ephemeral mode
        # Prefect refuses to run, and says so itself
        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            self._warm_flow_import()
            return
        settings_env = get_current_settings().to_environment_variables(exclude_unset=True)
        deadline = time.monotonic() + float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        try:
            with httpx.Client(trust_env=False) as client:
                while time.monotonic() < deadline:
                    with self._lock:
                        if self._cancelled:
                            return
                        if self._process is None or self._process.poll() == PORT_IN_USE_EXIT:
                            port = free_port()
                            self._process = self._launch(port, settings_env)
                            url = f"http://127.0.0.1:{port}/api"
                            self._warm_flow_import()
                        elif self._process.poll() is not None:
                            return  # it failed: the flow starts Prefect's own and reports why
                    try:
                        if client.get(f"{url}/health", timeout=2.0).status_code == 200:
                            self._url = url
                            return
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
        except Exception:  # noqa: BLE001 - the flow starts Prefect's own and reports a failure itself
            return
        finally:
            if self._process is not None:
                atexit.register(self.stop)

    def _warm_flow_import(self) -> None:
        """Import the flow module (Prefect's flow engine, task runners: about 1 s of CPU) in another
        thread while the server process starts on the other core; `wait()` joins it, so the CLI's
        own import afterwards finds it done. An import error surfaces there, where it always did."""
        if self._importer is None:
            self._importer = threading.Thread(target=_import_quietly, args=("flows.batch",),
                                              name="chunkwise-flow-import", daemon=True)
            self._importer.start()

    def wait(self) -> None:
        """Block until the server is up (or its start failed: the flow will then start Prefect's own),
        then point Prefect at it."""
        if self._thread is not None:
            self._thread.join()
        if self._importer is not None:
            self._importer.join()
        if self._url is None:
            self.stop()  # a process that never answered is of no use to anyone
            return
        from prefect.context import refresh_global_settings_context

        os.environ["PREFECT_API_URL"] = self._url
        refresh_global_settings_context()

    def cancel(self) -> None:
        """The run will not start: stop the server, or keep it from starting."""
        with self._lock:
            self._cancelled = True
        self.stop()

    def stop(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
