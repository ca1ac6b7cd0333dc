"""Outbound-connection guard for child processes of the tests (loaded by `site` through PYTHONPATH).

With CHUNKWISE_NETGUARD_LOG set, an audit hook (PEP 578) sees every `socket.getaddrinfo` and
`socket.connect` of this process and of every Python child that inherits the environment (Prefect's
API server subprocess included). Each one is appended to the log as a JSON line with `allowed`;
a name lookup or connection outside loopback and CHUNKWISE_NETGUARD_ALLOW (comma-separated host
names) is refused with OSError, as on an air-gapped machine, and recorded.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys


def _install(log_path: str) -> None:
    allow = {h.strip().lower() for h in os.environ.get("CHUNKWISE_NETGUARD_ALLOW", "").split(",") if h.strip()}
    allow |= {"localhost", "localhost.localdomain", "ip6-localhost"}

    def local(host: object) -> bool:
        if host is None:
            return True  # getaddrinfo(None, port): a wildcard for binding, never a remote host
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        text = str(host).strip("[]").lower()
        if text in allow or text == "":
            return True
        try:
            return ipaddress.ip_address(text.split("%")[0]).is_loopback
        except ValueError:
            return False

    def record(event: str, target: str, allowed: bool, **extra: object) -> None:
        line = json.dumps({"pid": os.getpid(), "event": event, "target": target, "allowed": allowed, **extra})
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def hook(event: str, args: tuple) -> None:
        if event == "socket.getaddrinfo":
            host, allowed = args[0], local(args[0])
            record(event, repr(host), allowed)
        elif event == "socket.connect":
            address = args[1]
            if isinstance(address, (str, bytes)):  # AF_UNIX: a local path
                return
            host, allowed = address[0], local(address[0])
            record(event, f"{host}:{address[1]}", allowed)
        else:
            return
        if not allowed:
            raise OSError(f"netguard: outbound connection to {host!r} refused (only loopback is allowed)")

    # proves the guard runs in every child process, and with which Prefect analytics setting
    record("start", " ".join(sys.orig_argv[:5]), True, analytics=os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED"))
    sys.addaudithook(hook)


if os.environ.get("CHUNKWISE_NETGUARD_LOG"):
    _install(os.environ["CHUNKWISE_NETGUARD_LOG"])
