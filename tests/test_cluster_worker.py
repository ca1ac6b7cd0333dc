"""`chunkwise worker`'s supervision: poll only while the host is usable (fake check, `sleep` as the worker)."""

import subprocess

from chunkwise.cluster.worker import (
    WorkerConfig,
    host_usable,
    leave_note,
    supervise_worker,
    wanted,
    worker_command,
    worker_env,
)


def test_the_worker_polls_only_while_the_host_is_usable():
    script = iter([(True, ""), (True, ""), (False, "down"), (False, "down"), (True, ""), (False, "gone")])
    spawned, logs = [], []

    def spawn():
        spawned.append(subprocess.Popen(["sleep", "60"]))
        return spawned[-1]

    cfg = WorkerConfig(pool="p", name="gpu1", ollama_host="http://127.0.0.1:1", check_s=0, grace_s=5)
    calls = iter(range(6))
    supervise_worker(cfg, log=logs.append, usable=lambda: next(script), spawn=spawn,
                     stop=lambda: next(calls, None) is None)
    assert len(spawned) == 2 and all(p.poll() is not None for p in spawned)  # started twice, stopped twice
    assert [m.split(": ", 1)[1].split(";")[0] for m in logs] == [
        "http://127.0.0.1:1 is usable", "stopped polling: down", "http://127.0.0.1:1 is usable",
        "stopped polling: gone"]


def test_the_worker_is_pointed_at_its_host_and_slots():
    cfg = WorkerConfig(pool="p", name="gpu1", ollama_host="http://10.0.0.5:11434", parallel=4, queues=("shards",))
    env = worker_env(cfg, base={"PATH": "/bin", "CHUNKWISE_OLLAMA_HOST": "http://elsewhere"})
    assert env["CHUNKWISE_OLLAMA_HOST"] == "http://10.0.0.5:11434" and env["CHUNKWISE_PARALLEL"] == "4"
    assert env["CHUNKWISE_HOST_LABEL"] == "gpu1" and env["PATH"].endswith(":/bin")  # after the interpreter's dir
    cmd = worker_command(cfg)
    assert cmd[cmd.index("--limit") + 1] == "1" and cmd[cmd.index("--work-queue") + 1] == "shards"


def test_an_unreachable_host_is_not_usable():
    ok, why = host_usable("http://127.0.0.1:9", "m", None, timeout_s=1)
    assert not ok and "does not answer" in why


def test_a_refused_shard_teaches_the_worker_the_digest_its_run_needs(tmp_path):
    notes = tmp_path / "notes.json"
    cfg = WorkerConfig(pool="p", name="gpu1", ollama_host="http://127.0.0.1:1", notes=str(notes))
    assert wanted(cfg) == (None, None)  # nothing refused yet: any model will do
    assert worker_env(cfg, base={})["CHUNKWISE_WORKER_NOTES"] == str(notes)
    leave_note(str(notes), "llama3.1:8b", "abc123", "host serves digest def456, the run needs abc123")
    assert wanted(cfg) == ("llama3.1:8b", "abc123")
    other = WorkerConfig(pool="p", name="gpu1", ollama_host="h", model="qwen2.5:7b", notes=str(notes))
    assert wanted(other) == ("qwen2.5:7b", None)  # a note about another model does not apply
    flags = WorkerConfig(pool="p", name="gpu1", ollama_host="h", model="llama3.1:8b", digest="fff", notes=str(notes))
    assert wanted(flags) == ("llama3.1:8b", "fff")  # the worker's own flags win
