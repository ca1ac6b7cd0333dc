"""A shard's preflight against its own server: digest, num_ctx, CPU spill (fake client, no server)."""

import pytest

from chunkwise.cluster.preflight import check_host
from chunkwise.errors import HostUnusable, ServerUnavailable
from chunkwise.servers import backend_for

RUN = "a" * 64
INFO = {"general.architecture": "llama", "llama.context_length": 8192}


class FakeOllama:
    def __init__(self, digest=RUN, ps=(), down=False):
        self.digest, self._ps, self.down = digest, list(ps), down

    def version(self):
        if self.down:
            raise ServerUnavailable("cannot connect to http://h:1; start Ollama")
        return {"version": "0.13.0"}

    def tags(self):
        return [{"name": "m:latest", "digest": self.digest}] if self.digest else []

    def show(self, model):
        return {"model_info": INFO}

    def ps(self):
        return self._ps


def test_a_matching_host_passes():
    check = check_host(backend_for("ollama"), FakeOllama(), "http://h:1", model="m", digest=RUN, num_ctx=4096)
    assert check.digest == RUN and check.as_dict()["digest_matches"] is True


@pytest.mark.parametrize(("client", "num_ctx", "message"), [
    (FakeOllama(digest="b" * 64), 4096, r"serves m with digest bbbbbbbbbbbb, but the run needs digest aaaaaaaaaaaa"),
    (FakeOllama(digest=""), 4096, r"digest none \(model not pulled\), but the run needs digest aaaaaaaaaaaa"),
    (FakeOllama(), 16384, r"num_ctx 16384 is above m's context of 8192"),
    (FakeOllama(ps=[{"name": "m:latest", "size": 100 * 2**20, "size_vram": 60 * 2**20}]), 4096,
     r"partly on the CPU .*size_vram 60 MiB < size 100 MiB"),
    (FakeOllama(down=True), 4096, r"cannot be checked .*start Ollama there or stop its worker"),
])
def test_an_unusable_host_refuses_in_one_line(client, num_ctx, message):
    with pytest.raises(HostUnusable, match=message) as info:
        check_host(backend_for("ollama"), client, "http://h:1", model="m", digest=RUN, num_ctx=num_ctx)
    assert "\n" not in str(info.value)
