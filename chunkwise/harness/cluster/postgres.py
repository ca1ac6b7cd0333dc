"""The loopback cluster's PostgreSQL (Debian's `postgresql` package): a fresh cluster in a temporary
directory, reachable on 127.0.0.1 and on a Unix socket in its own 0700 data directory, with password
authentication (scram-sha-256) for every connection, never `trust`: any local user could otherwise
connect and read or rewrite the Prefect database (flow runs, parameters, logs). The password is
random per cluster, handed to initdb in a 0600 file, and given only to the Prefect server, in the
database URL of its environment.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"
DATABASE = "prefect"


@dataclass(frozen=True)
class Postgres:
    data: Path
    #: The OS user the server runs as (root cannot run PostgreSQL), or None when not root.
    os_user: str | None
    port: int
    password: str

    @property
    def url(self) -> str:
        """The Prefect server's database URL (holds the password: the server's environment only)."""
        return f"postgresql+asyncpg://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def client_env(self) -> dict[str, str]:
        """Environment for a libpq tool (pg_dump, psql) run against it."""
        return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": USER,
                "PGPASSWORD": self.password}

    def stop(self) -> None:
        as_pg(self.os_user, [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])


def as_pg(user: str | None, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as `user` when given (PostgreSQL refuses to run as root)."""
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def ensure_postgres() -> None:
    """Debian's postgresql package, installed with apt-get when missing (root only)."""
    if (PG_BIN / "postgres").exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL is missing: apt-get install postgresql (as root), then rerun the cluster tests")
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, timeout=600)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _create_database(port: int, password: str) -> None:
    import asyncpg  # type: ignore[import-untyped]  # Prefect's PostgreSQL driver

    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=USER, password=password, database="postgres")
    try:
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()


def start_postgres(base: Path) -> Postgres:
    """initdb with scram-sha-256 for local and host connections, start on a free loopback port, create
    the `prefect` database."""
    ensure_postgres()
    user = USER if os.geteuid() == 0 else None
    data = base / "pg"
    data.mkdir(mode=0o700)
    password = secrets.token_urlsafe(24)
    pwfile = base / "pg-password"
    pwfile.write_text(password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    if user:
        pw = pwd.getpwnam(user)
        for path in (base, data, pwfile):  # postgres writes its socket/lock files only where it may
            os.chown(path, pw.pw_uid, pw.pw_gid)
    try:
        r = as_pg(user, [str(PG_BIN / "initdb"), "-D", str(data), "--auth=scram-sha-256", "-U", USER,
                         f"--pwfile={pwfile}", "--no-sync"])
    finally:
        pwfile.unlink()
    if r.returncode:
        raise RuntimeError(f"initdb failed: {r.stderr[-500:]}")
    port = free_port()
    r = as_pg(user, [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "120", "-l", str(data / "log"), "-o",
                     f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=200", "start"])
    if r.returncode:
        raise RuntimeError(f"pg_ctl start failed: {r.stderr[-500:]} {(data / 'log').read_text()[-800:]}")
    server = Postgres(data=data, os_user=user, port=port, password=password)
    try:
        asyncio.run(_create_database(port, password))
    except BaseException:
        server.stop()
        raise
    return server
