"""A whole distributed chunkwise on one machine, over loopback: for `make cluster-demo`, the cluster
tests (tests/support/cluster.py) and bench/scaleout/.

PostgreSQL (Debian's `postgresql` package; initdb into a temporary directory as the `postgres` user
when run as root, a free loopback port), `prefect server start` on it, the process work pool
`chunkwise-test` with its queues, the shard deployment from deployments/cluster.yaml, K simulator
processes with real-time rates and K `chunkwise worker`s, each pointed at its simulator, and a
temporary directory as the shared storage. Every process is started here and stopped by pid.
"""

from __future__ import annotations

import json
import os
import pwd
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

#: The project root (deployments/cluster.yaml, PYTHONPATH of every process): chunkwise/harness/cluster/ is 3 below.
ROOT = Path(__file__).resolve().parents[3]
POOL = "chunkwise-gpu"
#: Real-time simulator rates: ~0.3 s per short answer, 2 slots: about 6 requests/s per host.
SIM_ARGS = ["--parallel", "2", "--decode-tps", "50", "--prefill-tps", "4000", "--answer-tokens", "8:24"]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return get_json(f"{self.url}/sim/stats")


@dataclass
class Cluster:
    base: Path
    api_url: str
    env: dict[str, str]
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pg_data: Path | None = None
    pg_user: str | None = None
    shared: Path = Path()

    def start_sim(self, host: Host) -> None:
        log = open(self.base / f"sim-{host.name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        host.sim = subprocess.Popen([sys.executable, "-m", "chunkwise", "sim", "--port", str(host.port),
                                     *host.sim_args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        _wait(f"{host.url}/api/version", 60, host.sim)

    def start_worker(self, host: Host, parallel: int = 2) -> None:
        log = open(self.base / f"worker-{host.name}.log", "ab")  # noqa: SIM115
        host.worker = subprocess.Popen(
            [sys.executable, "-m", "chunkwise", "worker", "--pool", POOL, "--name", host.name,
             "--ollama-host", host.url, "--parallel", str(parallel), "--check-s", "1"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run_parent(self, input_path: Path, run_name: str, *extra: str, timeout_s: float = 600,
                   background: bool = False, chunk_size: int = 10,
                   ) -> subprocess.CompletedProcess[str] | subprocess.Popen[bytes]:
        """`chunkwise run --pool` (the parent) against host 1 for the manifest's digest, in the shared dir."""
        cmd = [sys.executable, "-m", "chunkwise", "run", "--input", str(input_path), "--host", self.hosts[0].url,
               "--output-dir", str(self.shared), "--run-name", run_name, "--pool", POOL, "--parallel", "2",
               "--num-ctx", "8192", "--chunk-size", str(chunk_size), "--system-prompt", "You are terse.", "--json",
               *extra]
        if background:
            log = open(self.base / f"parent-{run_name}.log", "ab")  # noqa: SIM115
            return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout_s)

    def close(self) -> None:
        for host in self.hosts:
            stop(host.worker)
        for host in self.hosts:
            stop(host.sim)
        for proc in reversed(self.procs):
            stop(proc)
        if self.pg_data is not None:
            _as_pg(self.pg_user, [str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-m", "immediate", "stop"],
                   check=False)


def _as_pg(user: str | None, cmd: list[str], *, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as `user` when given (PostgreSQL refuses to run as root)."""
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)


def ensure_postgres() -> None:
    """Debian's postgresql package, installed with apt-get when missing (root only)."""
    if (PG_BIN / "postgres").exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is missing: apt-get install postgresql (as root), then rerun the cluster tests")
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, timeout=600)


def start_postgres(base: Path) -> tuple[Path, str | None, int]:
    ensure_postgres()
    user = "postgres" if os.geteuid() == 0 else None
    data = base / "pg"
    data.mkdir()
    if user:
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)  # postgres writes its socket/lock files only where it may
        os.chown(data, pw.pw_uid, pw.pw_gid)
    r = _as_pg(user, [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
    if r.returncode:
        raise RuntimeError(f"initdb failed: {r.stderr[-500:]}")
    port = free_port()
    r = _as_pg(user, [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "120", "-l", str(data / "log"), "-o",
                      f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=200", "start"])
    if r.returncode:
        raise RuntimeError(f"pg_ctl start failed: {r.stderr[-500:]} {(data / 'log').read_text()[-800:]}")
    r = _as_pg(user, [str(PG_BIN / "createdb") if (PG_BIN / "createdb").exists() else "createdb", "-h", "127.0.0.1",
                      "-p", str(port), "-U", "postgres", "prefect"])
    if r.returncode:
        raise RuntimeError(f"createdb failed: {r.stderr[-500:]}")
    return data, user, port


def start_cluster(base: Path, sim_args: list[list[str]], shared: Path | None = None) -> Cluster:
    """The whole cluster; `sim_args[k]` are host k's `chunkwise sim` flags; `shared` (default
    `base/shared`) is the shared storage holding the run directories."""
    pg_data, pg_user, pg_port = start_postgres(base)
    home = base / "prefect-home"
    home.mkdir()
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHUNKWISE_", "OLLAMA_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{pg_port}/prefect",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "CHUNKWISE_GPU_SAMPLE_INTERVAL_S": "5",
    })
    cluster = Cluster(base=base, api_url=api_url, env=env, pg_data=pg_data, pg_user=pg_user,
                      shared=(shared or base / "shared").resolve())
    try:
        server_log = open(base / "server.log", "ab")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(api_port), "--no-ui"], env=env, stdout=server_log,
                                  stderr=subprocess.STDOUT, start_new_session=True, cwd=base)
        cluster.procs.append(server)
        _wait(f"{api_url}/health", 240, server)
        prefect = [sys.executable, "-m", "prefect"]
        for cmd in ([*prefect, "work-pool", "create", POOL, "--type", "process"],
                    [*prefect, "work-queue", "create", "shards", "--pool", POOL, "--priority", "2"],
                    [*prefect, "work-queue", "create", "retry", "--pool", POOL, "--priority", "1"],
                    [*prefect, "--no-prompt", "deploy", "--prefect-file", "deployments/cluster.yaml", "--all"]):
            r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd[2:5])} failed: {r.stdout[-800:]} {r.stderr[-800:]}")
        for k, args in enumerate(sim_args):
            host = Host(name=f"host{k + 1}", port=free_port(), sim_args=args)
            cluster.hosts.append(host)
            cluster.start_sim(host)
        for host in cluster.hosts:
            cluster.start_worker(host)
        cluster.shared.mkdir(parents=True, exist_ok=True)
        return cluster
    except BaseException:
        cluster.close()
        raise


def make_base() -> Path:
    """A temporary directory the `postgres` user can reach (pytest's tmp dirs sit under a 0700 root dir)."""
    return Path(tempfile.mkdtemp(prefix="chunkwise-cluster-"))


def cleanup_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
