"""The Prefect server's credential: where chunkwise reads it, and what a run says when it is missing.

Prefect 3.9's self-hosted server has basic authentication: the server holds `server.api.auth_string`
(PREFECT_SERVER_API_AUTH_STRING) and refuses every `/api` request without `Authorization: Basic
base64(auth_string)` (prefect 3.9.1 `src/prefect/server/api/server.py`, `token_validation`); every client
sends it from `api.auth_string` (PREFECT_API_AUTH_STRING), over HTTP and in the first message of its
websockets (`src/prefect/server/utilities/subscriptions.py`).

chunkwise takes the credential from the environment (PREFECT_API_AUTH_STRING, as Prefect does) or from
a file whose path is the setting `prefect_auth_file` (CHUNKWISE_PREFECT_AUTH_FILE): a file readable by
its owner only, so the secret is neither in a shell's history nor in a command line, which `ps` shows
to every user. `load_credential` (run by `chunkwise.cli.main` before any command) puts the file's
content into this process's environment as both variables, where Prefect reads it and from where it
reaches the Prefect worker, the shard flow processes it starts and a server started through
`chunkwise prefect server start`. A process's environment is readable by its owner (and root) only.

`check_api_access` asks the configured server one authenticated question before a run or a worker
starts, so a missing or wrong credential is one line naming the setting (exit 2), not a traceback.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import httpx

from chunkwise.errors import SetupError

CLIENT_VAR = "PREFECT_API_AUTH_STRING"
SERVER_VAR = "PREFECT_SERVER_API_AUTH_STRING"
FILE_SETTING = "CHUNKWISE_PREFECT_AUTH_FILE"
#: An endpoint that needs the credential (GET /api/health and /api/ready do not; prefect 3.9.1 lets them
#: through for load-balancer probes), answers quickly, and exists on every Prefect 3 server.
PROBE_PATH = "/admin/version"


def read_auth_file(path: Path, *, group_readable_ok: bool = False) -> str:
    """The credential in `path` (surrounding whitespace and the final newline dropped); a `SetupError`
    when the file is missing, empty, or readable by other users (by its group too, unless allowed)."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SetupError(f"{FILE_SETTING} {path} cannot be read ({exc.strerror or exc}); point it at the file "
                         "holding the Prefect server's auth string") from None
    except UnicodeDecodeError:
        raise SetupError(f"{FILE_SETTING} {path} is not UTF-8 text; write the auth string (user:password) "
                         "into it") from None
    loose = stat.S_IRWXO | (0 if group_readable_ok else stat.S_IRWXG)
    if info.st_mode & loose:
        raise SetupError(f"{FILE_SETTING} {path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                         f"run `chmod 600 {path}`")
    if not text:
        raise SetupError(f"{FILE_SETTING} {path} is empty; write the Prefect server's auth string (user:password) "
                         "into it")
    return text


def load_credential(file: Path | None, environ: MutableMapping[str, str] = os.environ, *,
                    group_readable_ok: bool = False) -> None:
    """Put the credential of `file` (the `prefect_auth_file` setting) into `environ` for Prefect's client
    and server; refuse a file that disagrees with a credential the environment already holds."""
    if file is None:
        return
    secret = read_auth_file(file, group_readable_ok=group_readable_ok)
    for var in (CLIENT_VAR, SERVER_VAR):
        if environ.get(var) and environ[var] != secret:
            raise SetupError(f"{var} and {FILE_SETTING} ({file}) hold different credentials; set only one of them")
        environ[var] = secret


def check_api_access(api_url: str, auth_string: str | None, *, timeout_s: float = 10.0) -> None:
    """One authenticated request to the Prefect API at `api_url`; a `SetupError` naming the setting to
    set when the server refuses it (401), or when it cannot be reached."""
    headers = {}
    if auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode("utf-8")).decode("ascii")
    url = api_url.rstrip("/") + PROBE_PATH
    try:
        with httpx.Client(trust_env=False, timeout=timeout_s) as client:
            status = client.get(url, headers=headers).status_code
    except httpx.HTTPError as exc:
        raise SetupError(f"cannot reach the Prefect server at {api_url} ({type(exc).__name__}: {exc}); start it, "
                         "or fix PREFECT_API_URL") from None
    if status == 401 and not auth_string:
        raise SetupError(f"the Prefect server at {api_url} requires authentication (401 Unauthorized); set "
                         f"{FILE_SETTING} to a file holding its auth string (or {CLIENT_VAR})")
    if status == 401:
        raise SetupError(f"the Prefect server at {api_url} refused the credential (401 Unauthorized); "
                         f"{FILE_SETTING} / {CLIENT_VAR} must hold the server's {SERVER_VAR}")


def check_environment_api(environ: Mapping[str, str] = os.environ) -> None:
    """`check_api_access` on PREFECT_API_URL as the environment names it, without loading Prefect's
    settings (about 1.4 s of imports): a run asks this before its preflight writes anything."""
    url = environ.get("PREFECT_API_URL")
    if url:
        check_api_access(url, environ.get(CLIENT_VAR) or None)


def check_configured_api() -> None:
    """`check_api_access` on the API Prefect is configured with in this process (PREFECT_API_URL and
    PREFECT_API_AUTH_STRING, or the ephemeral server `chunkwise run` started); nothing without one."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if api.url:
        check_api_access(str(api.url), api.auth_string.get_secret_value() if api.auth_string else None)
