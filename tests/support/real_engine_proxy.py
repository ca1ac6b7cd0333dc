"""A counting pass-through proxy in front of llama-server or Ollama (tests and bench/faults only): it relays
every request unchanged, byte for byte (streams included), and counts per request key -- the last user
message, which holds the row's unique prompt -- how often a chat request reached the server (a refused
connection does not count), how often the server worked on it (it answered status 200, or died while
the request was on the wire; a 503 while the model loads costs nothing) and how often its answer was
relayed to the end. The engine's own counters (`/metrics`) say how many tokens it generated; only the
proxy can say *which* request was sent twice.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

#: Request headers not relayed (hop-by-hop, or recomputed by httpx).
DROP = {"host", "connection", "content-length", "transfer-encoding", "accept-encoding"}


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        #: Requests the server began to answer (status 200), per key.
        self.began: Counter[str] = Counter()
        #: Every Authorization header seen (to prove the API key is sent).
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        # a fresh upstream connection per request: no keep-alive race with llama-server's 5 s idle close
        self._http = httpx.Client(base_url=upstream, timeout=httpx.Timeout(10.0, read=600.0), trust_env=False,
                                  limits=httpx.Limits(max_keepalive_connections=0))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.sent.clear()
            self.answered.clear()
            self.began.clear()
            self.auth.clear()

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        with self.lock:
            return Counter(self.sent), Counter(self.answered)

    def began_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.began)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection; the body ends at close

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                key = request_key(body) if body else None
                with proxy.lock:
                    if key is not None:
                        proxy.sent[key] += 1
                    if self.headers.get("Authorization"):
                        proxy.auth.add(self.headers["Authorization"])
                headers = {k: v for k, v in self.headers.items() if k.lower() not in DROP}
                began = False
                try:
                    with proxy._http.stream(method, self.path, content=body, headers=headers) as response:
                        began = response.status_code == 200
                        if key is not None and began:
                            with proxy.lock:
                                proxy.began[key] += 1
                        self.send_response(response.status_code)
                        self.send_header("Content-Type", response.headers.get("content-type", "application/json"))
                        self.end_headers()
                        for data in response.iter_raw():
                            self.wfile.write(data)
                            self.wfile.flush()
                        complete = response.status_code == 200
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client is gone (killed): its answer was not delivered
                except httpx.ConnectError:  # the server is down: it never received the request
                    with proxy.lock:
                        if key is not None:
                            proxy.sent[key] -= 1
                    return  # the client's connection closes without an answer, as a refused one would fail
                except httpx.TransportError:  # the server died while working on it (the fault matrix kills it)
                    if key is not None and not began:  # Ollama sends its 200 with the first token: cut in prefill
                        with proxy.lock:
                            proxy.began[key] += 1
                    return  # the client sees the cut
                if key is not None and complete:
                    with proxy.lock:
                        proxy.answered[key] += 1

            def do_GET(self) -> None:
                self._relay("GET")

            def do_POST(self) -> None:
                self._relay("POST")

        return Handler

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="counting-proxy", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._http.close()


def request_key(body: bytes) -> str | None:
    """The last user message of a chat request, or None for anything else."""
    try:
        messages = json.loads(body).get("messages") or []
    except (ValueError, AttributeError):
        return None
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1]) if users else None


@contextmanager
def counting_proxy(upstream: str) -> Iterator[CountingProxy]:
    proxy = CountingProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


METRIC = re.compile(r"^llamacpp:(\w+) ([0-9.eE+-]+)$", re.MULTILINE)


def engine_metrics(url: str) -> dict[str, float]:
    """llama-server's Prometheus counters (`--metrics`), by name without the `llamacpp:` prefix."""
    text = httpx.get(url + "/metrics", timeout=10.0, trust_env=False).text
    return {name: float(value) for name, value in METRIC.findall(text)}
