"""Where an Ollama server is: the host a user may write in any of the shapes Ollama's own client reads."""

from __future__ import annotations

import ipaddress

from chunkwise.errors import ConfigError

DEFAULT_PORT = 11434


#: The default ports Ollama's `envconfig.Host()` uses per scheme (envconfig/config.go, v0.33.0-rc2).
_SCHEME_PORTS = {"http": 80, "https": 443}


def parse_host(value: str) -> str:
    """Normalise an Ollama host the way Ollama's own client reads `OLLAMA_HOST`.

    Mirrors `envconfig.Host()` (ollama/ollama envconfig/config.go and its TestHost table, tag
    v0.33.0-rc2): surrounding spaces and quotes are stripped; no scheme means http on 11434
    (`host`, `host:port`, `:port` = this machine, `[::1]`, bare `::1`); `http://` defaults to
    port 80 and `https://` to 443; a path (a reverse proxy prefix) is kept; bare `ollama.com`
    means `https://ollama.com:443`.

    Refused with a message (Ollama would guess instead): a scheme other than http/https (a host
    such as `file:///etc/passwd` must never reach httpx), an empty host, and a port that is not a
    number in 1-65535 (Ollama logs a warning and silently uses the default port, which would send
    a typo'd port's requests to another server).
    """
    raw = value.strip().strip("\"'").strip()
    if not raw:
        raise ConfigError("Ollama host is empty; set --host or OLLAMA_HOST, e.g. http://127.0.0.1:11434")
    scheme, sep, hostport = raw.partition("://")
    if not sep:
        scheme, hostport, default_port = "http", raw, DEFAULT_PORT
        if raw == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme.lower() in _SCHEME_PORTS:
        scheme = scheme.lower()
        default_port = _SCHEME_PORTS[scheme]
    else:
        raise ConfigError(f"Ollama host {value!r} uses scheme {scheme!r}; only http and https are allowed")
    hostport, _, path = hostport.partition("/")
    host, port_text = _split_host_port(hostport, value)
    if not host:
        if port_text is None:
            raise ConfigError(f"Ollama host {value!r} has no host name; write it as http://HOST:PORT")
        host = "127.0.0.1"  # Go dials ":port" on the local system
    port = default_port
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ConfigError(f"Ollama host {value!r} has an invalid port {port_text!r}; write it as http://HOST:PORT "
                              "with a port from 1 to 65535")
        port = int(port_text)
    if ":" in host:
        host = f"[{host}]"
    path = path.rstrip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def _split_host_port(hostport: str, value: str) -> tuple[str, str | None]:
    """`host[:port]`, `[v6][:port]` or a bare IPv6 address -> (host, port or None)."""
    if hostport.startswith("["):
        inside, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"Ollama host {value!r} is not a valid address; write IPv6 as http://[::1]:11434")
        return inside, (rest[1:] if rest else None)
    if hostport.count(":") > 1:  # a bare IPv6 address such as ::1 has no port
        try:
            return str(ipaddress.IPv6Address(hostport)), None
        except ValueError:
            raise ConfigError(
                f"Ollama host {value!r} is not a valid address; write IPv6 as http://[::1]:11434") from None
    host, colon, port = hostport.partition(":")
    return host, (port if colon else None)
