"""Where an OpenAI-compatible server is: the base URL a user may write in any of the usual shapes."""

from __future__ import annotations

from urllib.parse import urlsplit

from chunkwise.errors import ConfigError

#: llama-server's default port (tools/server/README.md `--port`, default 8080).
DEFAULT_PORT = 8080


def parse_base_url(value: str) -> str:
    """Normalise an OpenAI-compatible base URL: `host:port`, `http://host:port` or the OpenAI SDK's
    `http://host:port/v1` (the `/v1` is dropped: paths here carry it). A bare host gets port 8080,
    llama-server's default. Anything but http(s) is refused."""
    raw = value.strip()
    if not raw:
        raise ConfigError("OpenAI-compatible server URL is empty; set --host or CHUNKWISE_OPENAI_HOST, "
                          "e.g. http://127.0.0.1:8080")
    default_port = DEFAULT_PORT if "://" not in raw else None
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"server URL {value!r} uses scheme {parts.scheme!r}; only http and https are allowed")
    if not parts.hostname:
        raise ConfigError(f"server URL {value!r} has no host name; write it as http://HOST:PORT")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"server URL {value!r} has an invalid port; write it as http://HOST:PORT") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{port}" if port else host
    path = parts.path.rstrip("/").removesuffix("/v1")
    return f"{parts.scheme}://{netloc}{path}"
