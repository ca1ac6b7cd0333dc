"""Start llama-server on 127.0.0.1, wait until it is ready, stop it.

The flags (measured with Gemma 3 270M on the 2-core CI machine, 2026-11):
`-np N -c ctx -t 2 -fit off --cache-ram 0 --no-webui --metrics --chat-template-file gemma.jinja`.
`-c` is the total context of all slots (each slot gets ctx / N); `--cache-ram 0` keeps RSS flat
(the default 8 GiB prompt cache grows it to ~1 GiB); `-fit off` halves start-up. Readiness is
`GET /health` answering 200 (it answers 503 while the model loads). Output of the server goes to
a log file, or to the terminal for `chunkwise engine`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from chunkwise.errors import SetupError
from chunkwise.harness.llama_server.http import get
from chunkwise.harness.llama_server.paths import MODEL_ALIAS, TEMPLATE, EnginePaths, engine_paths
from chunkwise.lifeline import tie

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class EngineStartError(SetupError):
    """llama-server did not become ready; the message names why and where its log is."""


def free_port(host: str = HOST) -> int:
    """A TCP port free on `host` right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def process_rss_mib(pid: int) -> float:
    """VmRSS of process `pid` in MiB (Linux /proc; the kernel reports kB = KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise EngineStartError(f"process {pid} has no VmRSS (a zombie?): it has exited")


@dataclass(frozen=True)
class EngineConfig:
    """How to start one llama-server. ctx is tokens for all slots together (`-c`)."""

    binary: Path
    model: Path
    port: int
    parallel: int = 4
    ctx: int = 8192
    threads: int = 2
    template: Path = TEMPLATE
    alias: str = MODEL_ALIAS
    host: str = HOST
    extra: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        return [str(self.binary), "-m", str(self.model), "--alias", self.alias, "--host", self.host,
                "--port", str(self.port), "-np", str(self.parallel), "-c", str(self.ctx), "-t", str(self.threads),
                "-fit", "off", "--cache-ram", "0", "--no-webui", "--metrics",
                "--chat-template-file", str(self.template), *self.extra]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class RunningEngine:
    """A started llama-server process."""

    config: EngineConfig
    process: subprocess.Popen[bytes]
    log_path: Path | None
    started_at: float
    ready_s: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mib(self) -> float:
        """Resident memory of the server process (VmRSS of /proc/PID/status), MiB. On a CPU build the
        KV cache, weights (mmapped) and compute buffers are all in it."""
        return process_rss_mib(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Poll /health until 200; returns seconds since the spawn. EngineStartError on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise EngineStartError(f"llama-server exited with {code} before it was ready; its log "
                                       f"{self.log_path or '(terminal)'} ends:\n{self.log_tail()}")
            try:
                if get(self.url + "/health", timeout_s=2.0)[0] == 200:
                    self.ready_s = time.monotonic() - self.started_at
                    return self.ready_s
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise EngineStartError(f"llama-server not ready at {self.url} after {timeout_s:.0f} s; see "
                                       f"{self.log_path or 'its output'}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode


def start_engine(config: EngineConfig, log_path: Path | None = None) -> RunningEngine:
    """Spawn llama-server (not waiting for readiness). Output to `log_path`, or inherited."""
    for path, what in ((config.binary, "llama-server"), (config.model, "model"), (config.template, "template")):
        if not Path(path).is_file():
            raise EngineStartError(f"{what} not found at {path}: run `make engine` first")
    # open for the process's lifetime; RunningEngine.stop() closes it
    log = Path(log_path).open("ab") if log_path is not None else None  # noqa: SIM115
    # With a log file the server is detached from the terminal's Ctrl-C (its own session); in the
    # foreground (`chunkwise engine`) it shares the terminal. Either way it is tied to this process's
    # life: a killed `chunkwise engine`, test run, measure or benchmark (SIGKILL: no stop(), no
    # atexit) leaves no server holding its memory and port behind (`chunkwise.lifeline`; unlike
    # PR_SET_PDEATHSIG, whichever thread starts it).
    process = tie(subprocess.Popen(config.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT if log else None, start_new_session=log is not None),
                  grace_s=STOP_TIMEOUT_S)
    return RunningEngine(config, process, Path(log_path) if log_path else None, time.monotonic(), _log=log)


def default_config(port: int, parallel: int = 4, ctx: int = 8192, paths: EnginePaths | None = None,
                   extra: Sequence[str] = (), threads: int | None = None) -> EngineConfig:
    """The cached binary and model with the given slots and context. threads defaults to
    min(2, CPUs): more threads than cores slows llama.cpp down."""
    paths = paths or engine_paths()
    return EngineConfig(paths.server, paths.model, port, parallel, ctx,
                        threads or min(2, os.cpu_count() or 1), extra=tuple(extra))


@contextmanager
def running_engine(parallel: int = 4, ctx: int = 8192, *, port: int | None = None, log_path: Path | None = None,
                   paths: EnginePaths | None = None, model: Path | None = None, extra: Sequence[str] = (),
                   ready_timeout_s: float = READY_TIMEOUT_S, threads: int | None = None) -> Iterator[RunningEngine]:
    """Start llama-server on a free loopback port (or `port`), yield it once ready, stop it on exit.

    A free port can be taken between the pick and the bind; when no port was given, a start that
    fails is tried once more on a new port.
    """
    tries = 1 if port is not None else 2
    for attempt in range(tries):
        config = default_config(port or free_port(), parallel, ctx, paths, extra, threads)
        if model is not None:
            config = EngineConfig(config.binary, Path(model), config.port, parallel, ctx, config.threads,
                                  extra=tuple(extra))
        engine = start_engine(config, log_path)
        try:
            engine.wait_ready(ready_timeout_s)
        except EngineStartError:
            engine.stop()
            if attempt + 1 == tries:
                raise
            continue
        try:
            yield engine
        finally:
            engine.stop()
        return
