"""The loopback cluster's security (issue 23), on the session's cluster (tests/support/cluster.py):

- its Prefect server (prefect 3.9.1, basic auth on) refuses a client without the credential, or with a
  wrong one: creating a flow run of the shard deployment and reading logs answer 401, the logs and
  events websockets close; the endpoints Prefect leaves open are exactly the ones docs/security.md
  lists;
- a parent (`chunkwise run --pool`) or a `chunkwise worker` without the credential stops at once with
  one line naming the setting (exit 2);
- after a distributed run, neither the Prefect credential, nor the API key in every process's
  environment, nor PostgreSQL's password is in any file of the run, the Prefect home or a dump of the
  database; every file of the run (written by the parent and by the workers' shard processes) is its
  owner's only;
- PostgreSQL takes passwords only (scram-sha-256), never `trust`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from chunkwise.harness.cluster.local import POOL, basic_auth
from chunkwise.harness.cluster.postgres import PG_BIN
from tests.support.cluster import API_KEY, Cluster
from tests.support.pipeline_helpers import write_requests

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]

NO_CREDENTIAL = ("the Prefect server at {url} requires authentication (401 Unauthorized); set "
                 "CHUNKWISE_PREFECT_AUTH_FILE to a file holding its auth string (or PREFECT_API_AUTH_STRING)")
#: What prefect 3.9.1 serves without the credential (GET only), as docs/security.md says: liveness probes,
#: the root app's API schema and its viewer, the UI's settings. Nothing of them names a run.
OPEN_GETS = ("/api/health", "/api/ready", "/docs", "/openapi.json", "/ui-settings")


def server_root(c: Cluster) -> str:
    return c.api_url.removesuffix("/api")


def status(method: str, url: str, headers: dict[str, str] | None = None, body: object = None) -> int:
    return httpx.request(method, url, json=body, headers=headers or {}, timeout=30, trust_env=False).status_code


def websocket_reply(url: str, token: str | None, *, subprotocol: bool = True) -> str:
    """What a websocket client gets from the server: the first message after Prefect's auth message, or
    how the connection was refused or closed."""
    try:
        with connect(url, subprotocols=["prefect"] if subprotocol else None, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "auth", "token": token}))
            return str(json.loads(ws.recv(timeout=10)).get("type"))
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code}"
    except ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else None}"


def test_the_server_refuses_clients_without_the_credential(cluster):
    good, wrong = cluster.auth_headers, basic_auth("chunkwise:wrong")
    deployment = cluster.api("/deployments/name/chunkwise-shard/shard")
    create = f"{cluster.api_url}/deployments/{deployment['id']}/create_flow_run"
    params = {"parameters": {"run_dir": "/etc", "shard": 0, "attempt": 0}}
    logs = f"{cluster.api_url}/logs/filter"
    for headers in ({}, wrong):
        assert status("POST", create, headers, params) == 401
        assert status("POST", logs, headers, {}) == 401
        assert status("POST", f"{cluster.api_url}/flow_runs/filter", headers, {}) == 401
        assert status("GET", f"{cluster.api_url}/version", headers) == 401
        assert status("GET", f"{cluster.api_url}/openapi.json", headers) == 401
    assert status("POST", logs, good, {}) == 200  # the credential opens what the others could not

    ws = server_root(cluster).replace("http://", "ws://") + "/api"
    password = cluster.auth_string
    for path in ("/events/in", "/events/out", "/logs/out"):
        assert websocket_reply(ws + path, None, subprotocol=False) == "refused 403"
        assert websocket_reply(ws + path, None) == "closed 1008"
        assert websocket_reply(ws + path, "chunkwise:wrong") == "closed 1008"
        assert websocket_reply(ws + path, password) == "auth_success"

    for path in OPEN_GETS:
        assert status("GET", server_root(cluster) + path) == 200, path
    assert status("GET", server_root(cluster) + "/") == 404  # the cluster's server runs without its UI


def parent_cmd(c: Cluster, source: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "chunkwise", "run", "--input", str(source), "--host", c.hosts[0].url,
            "--output-dir", str(c.shared), "--run-name", name, "--pool", POOL, "--num-ctx", "8192", "--chunk-size",
            "10"]


def test_a_parent_or_a_worker_without_the_credential_stops_with_one_line(cluster, tmp_path):
    source = write_requests(tmp_path / "in.parquet", 10)
    env = {k: v for k, v in cluster.env.items() if k != "CHUNKWISE_PREFECT_AUTH_FILE"}
    env["CHUNKWISE_INPUTS_ROOT"] = str(tmp_path)
    parent = subprocess.run(parent_cmd(cluster, source, "no-credential"), env=env, capture_output=True, text=True,
                            timeout=300)
    assert parent.returncode == 2, parent.stdout + parent.stderr
    assert parent.stderr.strip().splitlines()[-1] == "chunkwise run: " + NO_CREDENTIAL.format(url=cluster.api_url)
    worker = subprocess.run([sys.executable, "-m", "chunkwise", "worker", "--pool", POOL, "--name", "intruder",
                             "--host", cluster.hosts[0].url], env=env, capture_output=True, text=True,
                            timeout=120)
    assert worker.returncode == 2, worker.stdout + worker.stderr
    assert worker.stderr.strip().splitlines() == ["chunkwise worker: " + NO_CREDENTIAL.format(url=cluster.api_url)]


def files_holding(secret: str, *roots: Path) -> list[str]:
    needle = secret.encode()
    return [str(p) for root in roots for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_after_a_distributed_run_no_secret_is_stored_and_every_run_file_is_private(cluster, tmp_path):
    name = "secrets"
    source = write_requests(tmp_path / "in.parquet", 60)
    done = cluster.run_parent(source, name, "--shard-requests", "20")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = cluster.shared / name
    runs = [r for r in cluster.api("/flow_runs/filter", {"limit": 200}) if r["name"].startswith(f"{name}-shard-")]
    assert len(runs) == 3 and all(r["state_type"] == "COMPLETED" for r in runs)

    def events_recorded() -> bool:  # the server persists events in batches: wait for the shards' last ones
        body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{r['id']}" for r in runs]},
                           "event": {"name": ["prefect.flow-run.Completed"]}}, "limit": 50}
        return cluster.api("/events/filter", body)["total"] == len(runs)

    deadline = time.monotonic() + 120
    while not events_recorded():
        assert time.monotonic() < deadline, "the server did not record the shards' events within 120 s"
        time.sleep(1)
    assert cluster.postgres is not None
    dump = tmp_path / "prefect.sql"
    dumped = subprocess.run([str(PG_BIN / "pg_dump"), "--no-owner", "-f", str(dump), "prefect"],
                            env=cluster.postgres.client_env(), capture_output=True, text=True, timeout=300)
    assert dumped.returncode == 0, dumped.stderr
    text = dump.read_text(encoding="utf-8", errors="replace")
    assert f"{name}-shard-0000-a0" in text and str(run_dir) in text  # the dump holds the run's records
    home = Path(cluster.env["PREFECT_HOME"])
    for secret in (cluster.auth_string, API_KEY, cluster.postgres.password):
        assert files_holding(secret, run_dir, home, dump) == [], secret[:12]
        assert secret not in done.stdout + done.stderr

    loose = {str(p.relative_to(run_dir)): oct(p.stat().st_mode & 0o777) for p in [run_dir, *run_dir.rglob("*")]
             if p.stat().st_mode & 0o077}
    assert loose == {}
    assert (run_dir / "hosts").is_dir() and any((run_dir / "hosts").rglob("*.jsonl"))  # the workers' files too


def test_postgres_takes_passwords_only(cluster):
    import asyncpg

    pg = cluster.postgres
    assert pg is not None
    hba = [line.split() for line in (pg.data / "pg_hba.conf").read_text().splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
    assert hba and all(fields[-1] == "scram-sha-256" for fields in hba), hba

    async def try_connect(password: str | None) -> str:
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="postgres", password=password,
                                         database="prefect", timeout=10)
        except (asyncpg.PostgresError, OSError) as exc:
            return type(exc).__name__
        await conn.close()
        return "connected"

    assert asyncio.run(try_connect(None)) != "connected"
    assert asyncio.run(try_connect("wrong")) == "InvalidPasswordError"
    assert asyncio.run(try_connect(pg.password)) == "connected"
