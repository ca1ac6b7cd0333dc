"""deployments/prefect-proxy.nginx.conf in front of a Prefect server with authentication (issue 23,
point 1): what other hosts reach in the recipe of docs/distributed.md. Through it, with TLS: the API and its
websockets work for a client holding the credential (Prefect's own CLI included), refuse one without;
what Prefect 3.9.1 serves without authentication besides its liveness probes (/docs, /openapi.json,
/ui-settings, the UI) is not reachable. Only the listen address, the upstream port and the certificate
paths of the shipped file are changed for the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from chunkwise.harness.cluster.local import basic_auth
from tests.support.ui_helpers import REPO, child_env, prefect_server

pytestmark = pytest.mark.slow

CONF = REPO / "deployments" / "prefect-proxy.nginx.conf"
AUTH = "chunkwise:Proxy-9c2f"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.fail("nginx is not installed: run `make nginx` (Debian's nginx package) to test "
                    "deployments/prefect-proxy.nginx.conf")
    return found


def site_config(port: int, upstream: int, cert: Path, key: Path) -> str:
    """The shipped file with the test's addresses and certificate; each spot must exist exactly once."""
    text = CONF.read_text()
    for old, new in (("listen 4443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("proxy_pass http://127.0.0.1:4200;", f"proxy_pass http://127.0.0.1:{upstream};"),
                     ("/etc/chunkwise/prefect-proxy.crt", str(cert)), ("/etc/chunkwise/prefect-proxy.key", str(key))):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_the_proxy_passes_the_api_with_tls_and_hides_what_prefect_leaves_open(tmp_path):
    nginx = nginx_binary()
    cert, key = tmp_path / "proxy.crt", tmp_path / "proxy.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    auth_file = tmp_path / "auth"
    auth_file.write_text(AUTH)
    auth_file.chmod(0o600)
    port = free_port()
    with prefect_server(tmp_path / "home", log=tmp_path / "server.log", auth_file=auth_file) as api_url:
        upstream = int(api_url.rsplit(":", 1)[1].split("/")[0])
        (tmp_path / "site.conf").write_text(site_config(port, upstream, cert, key))
        temp = "".join(f"{kind}_temp_path {tmp_path}/{kind};\n" for kind in
                       ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (tmp_path / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
            + f"events {{}}\nhttp {{\naccess_log off;\n{temp}include {tmp_path}/site.conf;\n}}\n")
        proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proxy = f"https://127.0.0.1:{port}"
            client = httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), trust_env=False, timeout=30)
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (tmp_path / "error.log").read_text()
                try:
                    client.get(f"{proxy}/api/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "nginx did not answer within 30 s"
                    time.sleep(0.2)

            root = api_url.removesuffix("/api")
            for path in ("/docs", "/openapi.json", "/ui-settings"):
                assert httpx.get(root + path, trust_env=False).status_code == 200  # open on Prefect's own port
                assert client.get(proxy + path).status_code == 404, path  # not through the proxy
            assert client.get(proxy + "/").status_code == 404
            assert client.get(f"{proxy}/api/health").status_code == 200
            assert client.post(f"{proxy}/api/flow_runs/filter", json={}).status_code == 401
            assert client.post(f"{proxy}/api/flow_runs/filter", json={}, headers=basic_auth(AUTH)).status_code == 200

            tls = ssl.create_default_context(cafile=str(cert))
            with connect(f"wss://127.0.0.1:{port}/api/events/in", subprotocols=["prefect"], ssl=tls,
                         open_timeout=10) as ws:
                ws.send(json.dumps({"type": "auth", "token": AUTH}))
                assert json.loads(ws.recv(timeout=10))["type"] == "auth_success"

            # Prefect's own CLI through the proxy, over TLS, with the credential from its file
            env = child_env(tmp_path / "client-home", f"{proxy}/api", PREFECT_API_SSL_CERT_FILE=str(cert),
                            CHUNKWISE_PREFECT_AUTH_FILE=str(auth_file))
            made = subprocess.run([sys.executable, "-m", "chunkwise", "prefect", "work-pool", "create", "through-proxy",
                                   "--type", "process"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
            assert made.returncode == 0, made.stdout + made.stderr
            pools = client.post(f"{proxy}/api/work_pools/filter", json={}, headers=basic_auth(AUTH)).json()
            assert "through-proxy" in {p["name"] for p in pools}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
