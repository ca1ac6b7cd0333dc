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

Nothing is imported from Prefect in this process before `after` is set (`chunkwise run` sets it once its
head start has begun the first chunk, `chunkwise.run.headstart`, or once it knows there will be none):
imports hold the interpreter lock, and Prefect's settings and flow engine (about 3 s of CPU here) would
otherwise slow the preflight and the first requests on the main thread. In a fresh process (Prefect not
imported yet) and without `PREFECT_API_URL` in the environment, the server process is therefore launched
at once without asking Prefect's settings, which cannot be read without importing them: the child reads the
same environment and Prefect profile itself. Once `after` is set, the settings are read; when they name an
API after all (a profile's `PREFECT_API_URL`) or turn the temporary server off, the launched process is
stopped again and nothing is set, as if it had never been started.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def site_dir() -> Path:
    """The directory Prefect is installed in (`prefect.__module_path__.parent`), found without importing it."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise RuntimeError("prefect is not installed")
    return Path(spec.origin).parent.parent


class EarlyApi:
    def __init__(self, after: threading.Event | None = None) -> None:
        #: Prefect is imported in this process only once this is set (None: at once); see the module docstring.
        self._after = after
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
        server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(site_dir()), "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "error", "--lifespan", "on"]
        # tied to this process: a SIGKILLed run (no atexit) must not leave the server running (lifeline.py)
        return tie(subprocess.Popen(argv, env={**os.environ, **server_env, **settings_env}), grace_s=5)

    def _run(self) -> None:
        try:
            self._start_server()
        finally:
            if self._process is not None:
                atexit.register(self.stop)

    def _gate(self) -> bool:
        """Wait for `after` (see the module docstring); False once the run was cancelled."""
        if self._after is not None:
            self._after.wait()
        with self._lock:
            return not self._cancelled

    def _relaunch(self, settings_env: dict[str, str]) -> str | None:
        """Launch the server on a free port (under the lock, so `cancel` cannot miss it); its API URL, or None
        once cancelled."""
        with self._lock:
            if self._cancelled:
                return None
            port = free_port()
            self._process = self._launch(port, settings_env)
            return f"http://127.0.0.1:{port}/api"

    def _start_server(self) -> None:
        # an API named in the environment (a real server, the tests' harness) needs nothing
        if os.environ.get("PREFECT_API_URL"):
            if self._gate():
                self._warm_flow_import()
            return
        url: str | None = None
        settings_env: dict[str, str] = {}
        speculative = "prefect" not in sys.modules  # Prefect's settings would cost an import: launch first
        try:
            if speculative:
                url = self._relaunch(settings_env)
            elif not self._wanted():
                if self._gate():
                    self._warm_flow_import()
                return
            else:
                from prefect.settings import get_current_settings

                settings_env = get_current_settings().to_environment_variables(exclude_unset=True)
                url = self._relaunch(settings_env)
            if url is None or not self._gate():
                return
            if speculative and not self._wanted():
                self.stop()  # a profile names an API, or turns the temporary server off: not needed after all
                self._warm_flow_import()
                return
            self._warm_flow_import()
            self._poll(url, settings_env)
        except Exception:  # noqa: BLE001 - the flow starts Prefect's own and reports a failure itself
            return

    @staticmethod
    def _wanted() -> bool:
        """Whether Prefect's settings want the temporary server: no API configured, ephemeral mode on (without
        it Prefect refuses to run, and says so itself)."""
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())

    def _poll(self, url: str, settings_env: dict[str, str]) -> None:
        """Wait for `/health` (a lost race for the port starts it again on another one); sets `_url`."""
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        deadline = time.monotonic() + float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        with httpx.Client(trust_env=False) as client:
            while time.monotonic() < deadline:
                with self._lock:
                    process = self._process
                if process is None:
                    return  # cancelled
                if process.poll() == PORT_IN_USE_EXIT:
                    relaunched = self._relaunch(settings_env)
                    if relaunched is None:
                        return
                    url = relaunched
                elif process.poll() is not None:
                    return  # it failed: the flow starts Prefect's own and reports why
                try:
                    if client.get(f"{url}/health", timeout=2.0).status_code == 200:
                        self._url = url
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)

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
        if self._after is not None:
            self._after.set()  # a thread waiting to import Prefect goes on, sees the cancel and ends
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
