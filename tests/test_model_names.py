"""One model name, accepted the same way on every path that looks a model up: the run's preflight (its
digest), `chunkwise plan` (the weights' size), a shard's preflight and the worker's check (distributed
mode), and `chunkwise measure` (the model's /api/ps entry).

The witness is a small fake Ollama over loopback HTTP that names its one model as Ollama does
(github.com/ollama/ollama `types/model/name.go`: `ParseName` fills `registry.ollama.ai/library/?:latest`,
names compare case-insensitively, and `/api/tags` and `/api/ps` list `DisplayShortest()`, here
`llama3.1:latest`). It knows the spellings it accepts by listing them, not by chunkwise's rule.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chunkwise.cli import main
from chunkwise.cluster.preflight import check_host
from chunkwise.cluster.worker import host_usable
from chunkwise.gpu.sampler import GpuSampler
from chunkwise.measure.run import run_measurement
from chunkwise.run.prepare import prepare_run
from chunkwise.servers import backend_for
from chunkwise.settings import get_settings
from chunkwise.store import lock
from tests.support.fake_nvml import FakeNvml
from tests.support.pipeline_helpers import write_requests

DIGEST = "f" * 64
LISTED = "llama3.1:latest"
#: Every spelling Ollama resolves to the listed model (host, namespace and tag defaulted; any case).
SPELLINGS = ("llama3.1", "llama3.1:latest", "Llama3.1", "LLAMA3.1:LATEST", "library/llama3.1",
             "registry.ollama.ai/library/llama3.1", "registry.ollama.ai/library/llama3.1:latest",
             "REGISTRY.OLLAMA.AI/library/Llama3.1:latest")
INFO = {"general.architecture": "llama", "llama.block_count": 32, "llama.context_length": 131072,
        "llama.embedding_length": 4096, "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8}
SIZE = 4_920_753_328


class FakeOllama(BaseHTTPRequestHandler):
    """/api/version, /api/tags, /api/show, /api/ps and a one-line /api/chat for one model."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        entry = {"name": LISTED, "model": LISTED, "digest": DIGEST, "size": SIZE}
        if self.path == "/api/version":
            self._send(200, {"version": "0.13.0"})
        elif self.path == "/api/tags":
            self._send(200, {"models": [entry]})
        elif self.path == "/api/ps":
            self._send(200, {"models": [{**entry, "size_vram": SIZE, "context_length": 2048}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("model") not in SPELLINGS:
            self._send(404, {"error": f"model '{body.get('model')}' not found"})
        elif self.path == "/api/show":
            self._send(200, {"model_info": INFO, "capabilities": ["completion"], "details": {"family": "llama"}})
        elif self.path == "/api/chat":
            self._send(200, {"model": body["model"], "done": True, "done_reason": "stop", "prompt_eval_count": 900,
                             "eval_count": 4, "message": {"role": "assistant", "content": "fine"}})
        else:
            self._send(404, {"error": "not found"})


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_fake_refuses_what_ollama_would_not_resolve(fake):
    backend = backend_for("ollama")
    with closing(backend.client(fake, get_settings(), connect_timeout_s=2, read_timeout_s=2)) as client:
        with pytest.raises(Exception, match="not found"):
            backend.inspect(client, "llama3.2")
        assert backend.served_digest(client, "llama3.2") == ""


@pytest.mark.parametrize("name", SPELLINGS)
def test_the_run_records_the_digest(fake, tmp_path, name):
    from chunkwise.params import RunParams

    params = RunParams(input_path=str(write_requests(tmp_path / "in.parquet", 3)), host=fake, model=name,
                       output_dir=str(tmp_path / "runs"), run_name="t", num_ctx=4096)
    prepared = prepare_run(params)
    lock.release(prepared.ctx.dir)
    assert prepared.ctx.model_digest == DIGEST


@pytest.mark.parametrize("name", SPELLINGS)
def test_plan_finds_the_weights(fake, tmp_path, name, capsys, monkeypatch):
    from chunkwise.plan import probe

    monkeypatch.setattr(probe, "free_vram", lambda: (None, "test: no GPU"))
    source = write_requests(tmp_path / "in.parquet", 3)
    assert main(["plan", "--input", str(source), "--host", fake, "--model", name, "--num-ctx", "4096", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["weights_mib"] == pytest.approx(SIZE / 2**20)


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_shard_and_its_worker_accept_the_host(fake, name):
    backend = backend_for("ollama")
    with closing(backend.client(fake, get_settings(), connect_timeout_s=2, read_timeout_s=2)) as client:
        check = check_host(backend, client, fake, model=name, digest=DIGEST, num_ctx=4096)
    assert check.digest == DIGEST
    assert host_usable(fake, name, DIGEST[:12]) == (True, "")


def no_gpu(out_dir):
    class Missing(FakeNvml):
        def nvmlInit(self):
            raise self.NVMLError("NVML Shared Library Not Found")
    return GpuSampler(out_dir, 3600, nvml=Missing())


@pytest.mark.parametrize("name", ["registry.ollama.ai/library/llama3.1", "Llama3.1"])
def test_measure_reads_the_models_api_ps_entry(fake, tmp_path, name):
    backend = backend_for("ollama")
    with closing(backend.client(fake, get_settings(), connect_timeout_s=2, read_timeout_s=2)) as client:
        report = run_measurement(client, name, [1000, 2000], tmp_path, sampler_factory=no_gpu)
    assert [r.ps_size_vram_mib for r in report.rows] == [pytest.approx(SIZE / 2**20)] * 2
    assert not any("not in /api/ps" in r.note for r in report.rows)
