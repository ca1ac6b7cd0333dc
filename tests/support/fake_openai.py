"""A tiny OpenAI-compatible server that requires an API key (tests only).

It speaks what chunkwise's `--api openai` client needs, as OpenAI's API reference describes it:
`GET /v1/models` (a list of model objects), `POST /v1/chat/completions` streamed as server-sent events
(`data: {chat.completion.chunk}` lines, a last chunk with `choices: []` and `usage` when
`stream_options.include_usage` is asked, then `data: [DONE]`) or as one `chat.completion` object. Every
request must carry `Authorization: Bearer <key>`; any other gets 401 with an error object whose message
repeats the key it was given, as a careless server might, so a test can check that chunkwise does not
pass that message on with the key in it. `GET /props` (llama.cpp's) is 404 here, as on other servers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"


class FakeOpenAI:
    def __init__(self, key: str) -> None:
        self.key = key
        #: Authorization headers received (to prove the key was sent).
        self.auth: set[str] = set()
        self.answered = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                given = self.headers.get("Authorization", "")
                with fake.lock:
                    fake.auth.add(given)
                if given == f"Bearer {fake.key}":
                    return True
                self._json(401, {"error": {"message": f"Incorrect API key provided: {given.removeprefix('Bearer ')}",
                                           "type": "invalid_request_error", "code": "invalid_api_key"}})
                return False

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    if self._authorised():
                        self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                    return
                self._json(404, {"error": {"message": f"{self.path} not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path != "/v1/chat/completions":
                    self._json(404, {"error": {"message": f"{self.path} not found"}})
                    return
                if not self._authorised():
                    return
                prompt = str(body["messages"][-1]["content"])
                text = f"answer to {len(prompt)} characters"
                prompt_tokens = len(prompt) // 4 + 1
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 4, "total_tokens": prompt_tokens + 4}
                with fake.lock:
                    fake.answered += 1
                if not body.get("stream"):
                    self._json(200, {"id": "c", "object": "chat.completion", "model": MODEL, "usage": usage,
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": text}}]})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                          {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                          {"choices": [], "usage": usage}]
                for chunk in chunks:
                    self.wfile.write(b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk",
                                                             "model": MODEL, **chunk}).encode() + b"\n\n")
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

        return Handler


@contextmanager
def running_fake_openai(key: str) -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(key)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
