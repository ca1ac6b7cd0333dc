"""A whole distributed chunkwise on one machine, over loopback: for `make cluster-demo`, the cluster
tests (tests/support/cluster.py) and bench/scaleout/.

PostgreSQL with password authentication (`chunkwise.harness.cluster.postgres`), a Prefect server on
it with basic authentication on, the process work pool `chunkwise-gpu` with its queues, the shard
deployment from deployments/cluster.yaml, K simulator processes with real-time rates and K `chunkwise
worker`s, each pointed at its simulator, and a temporary directory as the shared storage (the runs
root of the parent and the workers). Every process is started here and stopped by pid.

Authenticated as the recipe of docs/distributed.md is: a random credential in a 0600 file named by
CHUNKWISE_PREFECT_AUTH_FILE, the only form in which the server (`chunkwise prefect server start`), the
workers and the parent get it; never a command-line argument. The server runs without its UI (whose
static files and /ui-settings Prefect serves without authentication). Prefect's own CLI and direct API
calls of the tests use `client_env` / `auth_headers`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkwise.harness.cluster.postgres import Postgres, start_postgres

#: The project root (deployments/cluster.yaml, PYTHONPATH of every process): chunkwise/harness/cluster/ is 3 below.
ROOT = Path(__file__).resolve().parents[3]
POOL = "chunkwise-gpu"
#: Real-time simulator rates: ~0.3 s per short answer, 2 slots: about 6 requests/s per host.
SIM_ARGS = ["--parallel", "2", "--slot-decode-tps", "50", "--slot-prefill-tps", "4000", "--answer-tokens", "8:24"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200; fail early when `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def get_json(url: str) -> dict[str, Any]:
    """GET a JSON body (the simulators' /sim/stats)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def basic_auth(auth_string: str) -> dict[str, str]:
    """The header Prefect's clients send for `api.auth_string`."""
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15) -> None:
    """SIGTERM the process group (the worker's flow runs with it), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Host:
    name: str
    port: int
    sim_args: list[str]
    sim: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    #: Where its simulator listens: loopback, or the inside address of a network island (`netns.Island`).
    address: str = "127.0.0.1"
    #: Prepended to its simulator's and worker's commands (`netns.Island.prefix`: run them on the island).
    prefix: list[str] = field(default_factory=list)
    #: Added to the cluster's environment for its worker (and the shard flows it starts).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def stats(self) -> dict[str, Any]:
        return get_json(f"{self.url}/sim/stats")


@dataclass
class Cluster:
    base: Path
    api_url: str
    #: The environment of every chunkwise process: the credential only as CHUNKWISE_PREFECT_AUTH_FILE.
    env: dict[str, str]
    #: The Prefect server's basic-auth string (random per cluster).
    auth_string: str = ""
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    postgres: Postgres | None = None
    shared: Path = Path()

    @property
    def client_env(self) -> dict[str, str]:
        """`env` with the credential where Prefect's own CLI and client read it (PREFECT_API_AUTH_STRING)."""
        return {**self.env, "PREFECT_API_AUTH_STRING": self.auth_string}

    @property
    def auth_headers(self) -> dict[str, str]:
        return basic_auth(self.auth_string)

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """An authenticated JSON request to the Prefect API (`path` after /api); POST when `body` is given."""
        req = urllib.request.Request(f"{self.api_url}{path}", data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **self.auth_headers})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def start_sim(self, host: Host) -> None:
        log = open(self.base / f"sim-{host.name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        host.sim = subprocess.Popen([*host.prefix, sys.executable, "-m", "chunkwise", "sim", "--port",
                                     str(host.port), "--bind", host.address, *host.sim_args], env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _wait(f"{host.url}/api/version", 60, host.sim)

    def start_worker(self, host: Host, parallel: int = 2, *extra: str) -> None:
        """`chunkwise worker` for `host` with `parallel` slots; `extra` are more of its flags."""
        log = open(self.base / f"worker-{host.name}.log", "ab")  # noqa: SIM115
        host.worker = subprocess.Popen(
            [*host.prefix, sys.executable, "-m", "chunkwise", "worker", "--pool", POOL, "--name", host.name,
             "--host", host.url, "--parallel", str(parallel), "--check-s", "1", *extra],
            env={**self.env, **host.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run_parent(self, input_path: Path, run_name: str, *extra: str, timeout_s: float = 600,
                   background: bool = False, chunk_size: int = 10,
                   ) -> subprocess.CompletedProcess[str] | subprocess.Popen[bytes]:
        """`chunkwise run --pool` (the parent) against host 1 for the manifest's digest, in the shared dir
        (the runs root), reading `input_path` from its own directory (the inputs root of this call)."""
        env = {**self.env, "CHUNKWISE_INPUTS_ROOT": str(Path(input_path).resolve().parent)}
        cmd = [sys.executable, "-m", "chunkwise", "run", "--input", str(input_path), "--host", self.hosts[0].url,
               "--output-dir", str(self.shared), "--run-name", run_name, "--pool", POOL, "--parallel", "2",
               "--num-ctx", "8192", "--chunk-size", str(chunk_size), "--system-prompt", "You are terse.", "--json",
               *extra]
        if background:
            log = open(self.base / f"parent-{run_name}.log", "ab")  # noqa: SIM115
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)

    def close(self) -> None:
        for host in self.hosts:
            stop(host.worker)
        for host in self.hosts:
            stop(host.sim)
        for proc in reversed(self.procs):
            stop(proc)
        if self.postgres is not None:
            self.postgres.stop()


def write_secret(path: Path, secret: str) -> Path:
    """`secret` in a new file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    return path


def start_cluster(base: Path, sim_args: list[list[str]], shared: Path | None = None,
                  env: dict[str, str] | None = None, api_host: str = "127.0.0.1") -> Cluster:
    """The whole cluster; `sim_args[k]` are host k's `chunkwise sim` flags; `shared` (default
    `base/shared`) is the shared storage holding the run directories; `env` is added to the environment
    of every process; `api_host` is the address the Prefect API listens on (loopback; the outside end
    of a network island's veth pair for a host on its own network, `netns.Island.outer_ip`)."""
    postgres = start_postgres(base)
    home = base / "prefect-home"
    home.mkdir(mode=0o700)
    api_port = free_port(api_host)
    api_url = f"http://{api_host}:{api_port}/api"
    auth_string = f"chunkwise:{secrets.token_urlsafe(24)}"
    shared = (shared or base / "shared").resolve()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHUNKWISE_", "OLLAMA_"))}
    env = {**base_env, **(env or {})}
    env.update({
        "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "CHUNKWISE_PREFECT_AUTH_FILE": str(write_secret(base / "prefect-auth", auth_string)),
        "CHUNKWISE_RUNS_ROOT": str(shared),
        "CHUNKWISE_GPU_SAMPLE_INTERVAL_S": "5",
    })
    cluster = Cluster(base=base, api_url=api_url, env=env, auth_string=auth_string, postgres=postgres, shared=shared)
    chunkwise = [sys.executable, "-m", "chunkwise"]
    try:
        server_log = open(base / "server.log", "ab")  # noqa: SIM115
        # the database URL (with PostgreSQL's password) is the server's alone
        server = subprocess.Popen([*chunkwise, "prefect", "server", "start", "--host", api_host,
                                   "--port", str(api_port), "--no-ui"],
                                  env={**env, "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url}, stdout=server_log,
                                  stderr=subprocess.STDOUT, start_new_session=True, cwd=base)
        cluster.procs.append(server)
        _wait(f"{api_url}/health", 240, server)  # /health answers without the credential (for probes)
        prefect = [*chunkwise, "prefect", "--"]
        for cmd in ([*prefect, "work-pool", "create", POOL, "--type", "process"],
                    [*prefect, "work-queue", "create", "shards", "--pool", POOL, "--priority", "2"],
                    [*prefect, "work-queue", "create", "retry", "--pool", POOL, "--priority", "1"],
                    [*prefect, "--no-prompt", "deploy", "--prefect-file", "deployments/cluster.yaml", "--all"]):
            r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd[4:7])} failed: {r.stdout[-800:]} {r.stderr[-800:]}")
        for k, args in enumerate(sim_args):
            host = Host(name=f"host{k + 1}", port=free_port(), sim_args=args)
            cluster.hosts.append(host)
            cluster.start_sim(host)
        for host in cluster.hosts:
            cluster.start_worker(host)
        cluster.shared.mkdir(mode=0o700, parents=True, exist_ok=True)  # the runs root: its owner's only
        return cluster
    except BaseException:
        cluster.close()
        raise


def make_base() -> Path:
    """A temporary directory the `postgres` user can reach (pytest's tmp dirs sit under a 0700 root dir)."""
    return Path(tempfile.mkdtemp(prefix="chunkwise-cluster-"))


def cleanup_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
