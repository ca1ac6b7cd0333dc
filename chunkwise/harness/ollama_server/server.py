"""Start the built Ollama on 127.0.0.1, wait until it answers, stop it.

`ollama serve` reads its configuration from the environment only (envconfig/config.go). Set here:
`OLLAMA_HOST` (127.0.0.1 and the port: never another interface), `OLLAMA_MODELS` (the cache's model store),
`HOME` (the server writes `~/.ollama/id_ed25519` on its first start: kept in the cache, not the user's
home), `OLLAMA_NUM_PARALLEL` (slots per loaded model), `OLLAMA_MAX_QUEUE` (pending requests before 503),
`OLLAMA_CONTEXT_LENGTH` (the default num_ctx of a request that sets none), `OLLAMA_NO_CLOUD=1` (no cloud
models, nothing but loopback), `OLLAMA_NOPRUNE=1` (never touch blobs at start). Readiness is
`GET /api/version` answering 200 (0.04-0.11 s after the spawn here). Like llama-server, the process is
tied to its parent's life (`chunkwise.lifeline`): a killed test run or `chunkwise ollama` leaves no server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from chunkwise.errors import SetupError
from chunkwise.harness.llama_server.http import get
from chunkwise.harness.llama_server.server import HOST, free_port
from chunkwise.harness.ollama_server.paths import MODEL_NAME, OllamaPaths, ollama_paths
from chunkwise.lifeline import tie

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class OllamaStartError(SetupError):
    """Ollama did not start or answer; the message names why and where its log is."""


@dataclass(frozen=True)
class OllamaConfig:
    """How to start one `ollama serve`. context_length None leaves Ollama's own default (4096 on a machine
    with under 23 GiB of VRAM, routes.go); max_queue None leaves its 512."""

    paths: OllamaPaths
    port: int
    parallel: int = 4
    max_queue: int | None = None
    context_length: int | None = None
    host: str = HOST
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The server's environment: the caller's minus every OLLAMA_* it had, plus ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
        env.update(HOME=str(self.paths.home), OLLAMA_HOST=f"{self.host}:{self.port}",
                   OLLAMA_MODELS=str(self.paths.models), OLLAMA_NUM_PARALLEL=str(self.parallel),
                   OLLAMA_NO_CLOUD="1", OLLAMA_NOPRUNE="1")
        if self.max_queue is not None:
            env["OLLAMA_MAX_QUEUE"] = str(self.max_queue)
        if self.context_length is not None:
            env["OLLAMA_CONTEXT_LENGTH"] = str(self.context_length)
        env.update(self.extra_env)
        return env


@dataclass
class RunningOllama:
    """A started `ollama serve`."""

    config: OllamaConfig
    process: subprocess.Popen[bytes]
    log_path: Path | None
    started_at: float
    model: str = MODEL_NAME
    ready_s: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.config.url

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Poll /api/version until 200; seconds since the spawn. OllamaStartError on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                tail = "\n".join(self.log_text().splitlines()[-20:])
                raise OllamaStartError(f"ollama serve exited with {code} before it answered; its log "
                                       f"{self.log_path or '(terminal)'} ends:\n{tail}")
            try:
                if get(self.url + "/api/version", timeout_s=2.0)[0] == 200:
                    self.ready_s = time.monotonic() - self.started_at
                    return self.ready_s
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise OllamaStartError(f"ollama serve not answering at {self.url} after {timeout_s:.0f} s; see "
                                       f"{self.log_path or 'its output'}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (Ollama stops its runners), then SIGKILL after `timeout_s`; returns the exit status."""
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


def start_ollama(config: OllamaConfig, log_path: Path | None = None) -> RunningOllama:
    """Spawn `ollama serve` (not waiting). Output to `log_path`, or inherited (the foreground command)."""
    if not config.paths.binary.is_file():
        raise OllamaStartError(f"Ollama not found at {config.paths.binary}: run `make ollama` first")
    config.paths.home.mkdir(parents=True, exist_ok=True)
    config.paths.models.mkdir(parents=True, exist_ok=True)
    log = Path(log_path).open("ab") if log_path is not None else None  # noqa: SIM115 (closed by stop())
    # Its working directory is the version's own: Ollama also looks for backends in ./build/lib/ollama.
    process = tie(subprocess.Popen([str(config.paths.binary), "serve"], env=config.env(),
                                   cwd=config.paths.version_dir, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT if log else None, start_new_session=log is not None),
                  grace_s=STOP_TIMEOUT_S)
    return RunningOllama(config, process, Path(log_path) if log_path else None, time.monotonic(), _log=log)


@contextmanager
def running_ollama(parallel: int = 4, *, max_queue: int | None = None, context_length: int | None = None,
                   port: int | None = None, log_path: Path | None = None, paths: OllamaPaths | None = None,
                   extra_env: Mapping[str, str] | None = None,
                   ready_timeout_s: float = READY_TIMEOUT_S) -> Iterator[RunningOllama]:
    """Start Ollama on a free loopback port (or `port`), yield it once it answers, stop it on exit.
    When no port was given, a start that fails (the port taken between pick and bind) is tried once more."""
    tries = 1 if port is not None else 2
    for attempt in range(tries):
        config = OllamaConfig(paths or ollama_paths(), port or free_port(), parallel, max_queue, context_length,
                              extra_env=dict(extra_env or {}))
        server = start_ollama(config, log_path)
        try:
            server.wait_ready(ready_timeout_s)
        except OllamaStartError:
            server.stop()
            if attempt + 1 == tries:
                raise
            continue
        try:
            yield server
        finally:
            server.stop()
        return
