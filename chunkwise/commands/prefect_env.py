"""The environment every Prefect server that chunkwise starts runs in: no calls home.

`chunkwise run`, `demo`, `measure --prefect` start Prefect's temporary ("ephemeral") API server in a
subprocess that inherits this process's environment. Prefect turns its server analytics on by
default (`PREFECT_SERVER_ANALYTICS_ENABLED`, prefect/settings/models/server/root.py, Prefect 3.9):
the server's telemetry service then posts to `https://sens-o-matic.prefect.io/`
(prefect/server/services/telemetry.py) and the SDK sends usage events once the server reports
analytics on (prefect/_internal/analytics/service.py, gated on the server setting and on
`DO_NOT_TRACK`). A batch tool on an air-gapped GPU machine must talk to its LLM server only, so both
are off unless the user turned analytics on explicitly in the environment.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ANALYTICS = "PREFECT_SERVER_ANALYTICS_ENABLED"
_TRUE = ("1", "true", "yes", "on")


def no_calls_home(environ: MutableMapping[str, str] = os.environ) -> None:
    """Default Prefect's analytics to off in `environ` (before Prefect starts a server).

    An explicit `PREFECT_SERVER_ANALYTICS_ENABLED=true` wins and leaves `DO_NOT_TRACK` alone.
    """
    environ.setdefault(ANALYTICS, "false")
    if environ[ANALYTICS].strip().lower() not in _TRUE:
        environ.setdefault("DO_NOT_TRACK", "1")
    # A first start of the ephemeral API on a fresh Prefect home can take over its 20 s default.
    environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
