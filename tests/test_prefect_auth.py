"""The Prefect credential (issue 23, points 1 and 4): read from the environment or from the file named
by CHUNKWISE_PREFECT_AUTH_FILE (owner-only), never from a command line; a run or a worker against a
server that needs a credential it lacks stops with one line naming the setting (exit 2); the server
that `make server` starts with a credential refuses clients without it; and neither that credential
nor the OpenAI-compatible API key lands in any file of the run, the Prefect homes (the server's SQLite
database included), or the run's output.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from chunkwise.cli import main as cli_main
from chunkwise.commands.prefect import is_loopback, server_host
from chunkwise.errors import EXIT_CONFIG, SetupError
from chunkwise.prefect_auth import check_api_access, check_environment_api, load_credential, read_auth_file
from tests.support.fake_openai import MODEL, running_fake_openai
from tests.support.pipeline_helpers import write_requests
from tests.support.ui_helpers import REPO, child_env, prefect_server

AUTH = "chunkwise:Cred-7d1e-XYZ"
NO_CREDENTIAL = ("the Prefect server at {url} requires authentication (401 Unauthorized); set "
                 "CHUNKWISE_PREFECT_AUTH_FILE to a file holding its auth string (or PREFECT_API_AUTH_STRING)")
WRONG_CREDENTIAL = ("the Prefect server at {url} refused the credential (401 Unauthorized); "
                    "CHUNKWISE_PREFECT_AUTH_FILE / PREFECT_API_AUTH_STRING must hold the server's "
                    "PREFECT_SERVER_API_AUTH_STRING")


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_file_must_exist_hold_something_and_be_its_owners_only(tmp_path):
    good = secret_file(tmp_path / "auth", AUTH)
    assert read_auth_file(good) == AUTH  # the final newline is not part of it
    with pytest.raises(SetupError, match=r"cannot be read \(No such file or directory\)"):
        read_auth_file(tmp_path / "missing")
    with pytest.raises(SetupError, match="is empty"):
        read_auth_file(secret_file(tmp_path / "empty", ""))
    for mode in (0o604, 0o644, 0o666):
        with pytest.raises(SetupError, match=rf"accessible by other users \(mode {mode:o}\); run `chmod 600"):
            read_auth_file(secret_file(tmp_path / f"open{mode:o}", AUTH, mode))
    group = secret_file(tmp_path / "group", AUTH, 0o640)
    with pytest.raises(SetupError, match="accessible by other users"):
        read_auth_file(group)
    assert read_auth_file(group, group_readable_ok=True) == AUTH  # CHUNKWISE_FILE_MODE=group


def test_the_file_sets_the_client_and_server_variables_and_must_agree_with_them(tmp_path):
    env: dict[str, str] = {}
    load_credential(None, env)
    assert env == {}
    load_credential(secret_file(tmp_path / "auth", AUTH), env)
    assert env == {"PREFECT_API_AUTH_STRING": AUTH, "PREFECT_SERVER_API_AUTH_STRING": AUTH}
    with pytest.raises(SetupError, match=r"PREFECT_API_AUTH_STRING and CHUNKWISE_PREFECT_AUTH_FILE .* hold different"):
        load_credential(tmp_path / "auth", {"PREFECT_API_AUTH_STRING": "someone:else"})


@contextmanager
def basic_auth_server(auth: str) -> Iterator[str]:
    """A stand-in API answering 401 unless `Authorization: Basic base64(auth)`, as Prefect's middleware."""
    expected = "Basic " + base64.b64encode(auth.encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            ok = self.headers.get("Authorization") == expected and self.path == "/api/admin/version"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_check_api_access_names_the_setting_to_set():
    with basic_auth_server(AUTH) as url:
        check_api_access(url, AUTH)  # the right credential passes
        with pytest.raises(SetupError) as info:
            check_api_access(url, None)
        assert str(info.value) == NO_CREDENTIAL.format(url=url)
        with pytest.raises(SetupError) as info:
            check_api_access(url, "chunkwise:wrong")
        assert str(info.value) == WRONG_CREDENTIAL.format(url=url)
    with pytest.raises(SetupError, match=r"cannot reach the Prefect server at http://127\.0\.0\.1:9/api"):
        check_api_access("http://127.0.0.1:9/api", AUTH)


def test_the_early_check_reads_the_environment_only():
    check_environment_api({})  # no API configured there: nothing to ask
    with basic_auth_server(AUTH) as url:
        check_environment_api({"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": AUTH})
        with pytest.raises(SetupError, match="requires authentication"):
            check_environment_api({"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": ""})


@pytest.mark.parametrize("args, host", [(["server", "start"], "127.0.0.1"),
                                        (["server", "start", "--host", "0.0.0.0"], "0.0.0.0"),
                                        (["server", "start", "--host=10.1.2.3", "--no-ui"], "10.1.2.3"),
                                        (["worker", "start", "--host", "x"], None)])
def test_server_host_is_read_from_prefects_arguments(args, host):
    assert server_host(args, {}) == host


def test_loopback_addresses():
    assert all(map(is_loopback, ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "10.0.0.1", "gpu-server", "::")))


def test_an_unauthenticated_server_on_another_address_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    code = cli_main(["prefect", "server", "start", "--host", "0.0.0.0", "--port", "1"])
    assert code == EXIT_CONFIG
    assert capsys.readouterr().err.strip().splitlines() == [
        "chunkwise prefect: refusing to start a Prefect server on 0.0.0.0 without authentication: anyone who reaches "
        "it could start flow runs and read every log; set CHUNKWISE_PREFECT_AUTH_FILE to a file holding user:password "
        "(or bind --host 127.0.0.1)"]


def test_a_bad_setting_is_one_line(capsys, monkeypatch):
    from chunkwise.settings import get_settings

    monkeypatch.setenv("CHUNKWISE_FILE_MODE", "world")
    get_settings.cache_clear()
    try:
        assert cli_main(["prefect", "version"]) == EXIT_CONFIG
    finally:
        get_settings.cache_clear()
    assert capsys.readouterr().err.strip() == ("chunkwise prefect: CHUNKWISE_FILE_MODE: Input should be 'private' or "
                                              "'group'; fix or unset it")


# -- a real server started as `make server` starts it with a credential ----------------------------------


def files_holding(secret: str, *roots: Path) -> list[str]:
    """Every file under `roots` whose bytes contain `secret` (SQLite pages, WAL and journal included)."""
    needle = secret.encode()
    return [str(p) for root in roots for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chunkwise", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Children start with a typical shell's umask (022), so what they create private they made so."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.slow
@pytest.mark.usefixtures("loose_umask")
def test_a_run_against_an_authenticated_server_and_where_its_secrets_end_up(tmp_path):
    """`chunkwise prefect server start` with CHUNKWISE_PREFECT_AUTH_FILE (what `make server` runs): runs
    without the credential, or with a wrong one, stop with one line (exit 2) before sending anything; a run
    with it (and an OpenAI-compatible server that requires an API key) completes; once the server has
    recorded the run's events, neither the API key nor the credential is in any file of the run directory,
    the server's Prefect home (its SQLite database) or the client's, nor in the run's output; the server's
    files are its owner's only."""
    key = "sk-SECRET-MARKER-" + "5" * 24
    auth_file = secret_file(tmp_path / "prefect-auth", AUTH)
    server_home = tmp_path / "server-home"  # created by the server: under chunkwise's umask
    runs, client_home = tmp_path / "runs", tmp_path / "client-home"
    source = write_requests(tmp_path / "in.parquet", 6)
    args = ["run", "--input", str(source), "--api", "openai", "--model", MODEL, "--num-ctx", "4096",
            "--output-dir", str(runs), "--mode", "independent", "--chunk-size", "3", "--json"]
    with prefect_server(server_home, log=tmp_path / "server.log", auth_file=auth_file) as api_url, \
            running_fake_openai(key) as fake:
        assert httpx.post(f"{api_url}/flow_runs/filter", json={}, trust_env=False).status_code == 401
        base = child_env(client_home, api_url, CHUNKWISE_OPENAI_HOST=fake.url, CHUNKWISE_API_KEY=key)
        refused = run_cli([*args, "--run-name", "no-credential"], base)
        assert refused.returncode == EXIT_CONFIG, refused.stderr
        assert refused.stderr.strip().splitlines()[-1] == "chunkwise run: " + NO_CREDENTIAL.format(url=api_url)
        wrong = run_cli([*args, "--run-name", "wrong"], {**base, "PREFECT_API_AUTH_STRING": "chunkwise:wrong"})
        assert wrong.returncode == EXIT_CONFIG, wrong.stderr
        assert wrong.stderr.strip().splitlines()[-1] == "chunkwise run: " + WRONG_CREDENTIAL.format(url=api_url)
        assert fake.answered == 0
        assert not runs.exists()  # refused before the run directory was made

        done = run_cli([*args, "--run-name", "ok"], {**base, "CHUNKWISE_PREFECT_AUTH_FILE": str(auth_file)})
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["requests"]["succeeded"] == 6 and fake.auth == {f"Bearer {key}"}

        headers = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
        runs_on_server = httpx.post(f"{api_url}/flow_runs/filter", json={}, headers=headers, trust_env=False).json()
        flow_run = next(r for r in runs_on_server if r["parameters"]["params"]["run_name"] == "ok")
        assert flow_run["state_type"] == "COMPLETED"

        def recorded_events() -> int:
            body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{flow_run['id']}"]}}, "limit": 50}
            found = httpx.post(f"{api_url}/events/filter", json=body, headers=headers, trust_env=False).json()
            names = {e["event"] for e in found["events"]}
            return found["total"] if "prefect.flow-run.Completed" in names else 0

        wait_until(recorded_events, 120, "the server to record the run's events")
        logs = httpx.post(f"{api_url}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run["id"]]}}},
                          headers=headers, trust_env=False).json()
        assert logs  # the run's logs reached the server's database too
    # the server is stopped: its database is complete on disk
    # everything the test, the server and the runs wrote: the credential is in its own file only
    assert {runs, server_home, client_home} <= set(tmp_path.iterdir())
    assert files_holding(AUTH, tmp_path) == [str(auth_file)]
    assert files_holding(key, tmp_path) == []
    for secret in (key, AUTH):
        for out in (done, refused, wrong):
            assert secret not in out.stdout + out.stderr
    assert (server_home / "prefect.db").is_file() and (runs / "ok" / "results.parquet").is_file()
    loose = {str(p): oct(p.stat().st_mode & 0o777) for root in (server_home, runs) for p in [root, *root.rglob("*")]
             if not p.is_symlink() and p.stat().st_mode & 0o077}
    assert loose == {}


EPHEMERAL = """
import os, httpx
from chunkwise.cli import secure_process
from chunkwise.commands.early_api import EarlyApi
from chunkwise.commands.prefect_env import no_calls_home
from chunkwise.prefect_auth import check_configured_api
no_calls_home()
secure_process()
api = EarlyApi().start()
api.wait()
url = os.environ["PREFECT_API_URL"]
print(httpx.post(url + "/flow_runs/filter", json={}, trust_env=False).status_code)
check_configured_api()
print("credential accepted")
api.stop()
"""


@pytest.mark.slow
def test_with_a_credential_file_the_temporary_api_of_a_single_host_run_needs_it_too(tmp_path):
    """`chunkwise run` without PREFECT_API_URL starts Prefect's temporary API (`commands/early_api.py`) with
    this process's environment: with CHUNKWISE_PREFECT_AUTH_FILE set it runs with basic auth, and the run's
    own client holds the credential."""
    env = child_env(tmp_path / "home", CHUNKWISE_PREFECT_AUTH_FILE=str(secret_file(tmp_path / "auth", AUTH)))
    done = subprocess.run([sys.executable, "-c", EPHEMERAL], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["401", "credential", "accepted"]
