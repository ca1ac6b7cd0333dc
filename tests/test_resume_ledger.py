"""The per-request ledger and checkpoints, without Prefect: an interrupted chunk resumes from its
ledger (conversation rebuilt with the same trimming), and torn or corrupt files are never trusted.

Each test compares with an uninterrupted run on a fresh simulator (it is deterministic) and uses
the simulator's per-request counts to show what was sent again.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chunkwise.backend import ChatRequest, ChatResult
from chunkwise.harness.sim.fingerprint import chat_fingerprint
from chunkwise.run.chunk import run_chunk
from chunkwise.run.context import RunContext
from chunkwise.run.session import RunSession, default_client
from chunkwise.store.checkpoint import DIGEST_KEY, load_checkpoint
from chunkwise.store.layout import RunPaths
from chunkwise.store.ledger import decode_line
from tests.support.direct_run import run_all, start
from tests.support.pipeline_helpers import params_for, write_requests
from tests.support.run_checks import (
    assert_answered_once,
    assert_same_results,
    ledger_records,
    results,
)

SIM = dict(answer_tokens=(30, 60), parallel=2)


class Crash(BaseException):
    """Stands in for the process dying: nothing in chunkwise catches it."""


@pytest.fixture(autouse=True)
def _clean_process():
    yield


def conversation_params(sim, tmp_path, name="t", **changes):
    source = tmp_path / "in.parquet"
    if not source.exists():
        write_requests(source, 24, prompt_words=20)
    # num_ctx 1024 with trim 0.6: a chunk's conversation trims its oldest pairs after a few turns,
    # so a conversation rebuilt after an interruption must trim exactly as the original did.
    values = dict(mode="conversation", num_ctx=1024, trim_threshold=0.6, chunk_size=12, parallel=1,
                  num_predict=128, run_name=name)
    values.update(changes)
    return params_for(sim, source, tmp_path / "runs", **values)


def baseline(sim_factory, tmp_path, **changes):
    sim = sim_factory(**SIM)
    run_all(conversation_params(sim, tmp_path, name="base", **changes))
    return results(tmp_path / "runs" / "base")


class CrashingClient:
    """The run's real client, whose chat raises Crash on its n-th call: before sending, or after the
    answer arrived (a process dying at that point). Given to the run through the session's
    `client_factory` seam."""

    def __init__(self, ctx: RunContext, n: int, after_answer: bool) -> None:
        self.real, self.n, self.after_answer = default_client(ctx), n, after_answer
        self.host = self.real.host
        self.calls = 0
        self.messages: tuple[str, list[dict[str, str]]] | None = None

    def chat(self, request: ChatRequest) -> ChatResult:
        self.calls += 1
        if self.calls == self.n and not self.after_answer:
            raise Crash()
        answer = self.real.chat(request)
        if self.calls == self.n:
            self.messages = (request.model, request.messages)
            raise Crash()
        return answer

    def close(self) -> None:
        self.real.close()


def crash_in_first_chunk(ctx: RunContext, specs, n: int, *, after_answer: bool = False) -> CrashingClient:
    """Run the first chunk with a client that crashes on its n-th call; the session is closed after."""
    clients: list[CrashingClient] = []

    def factory(ctx: RunContext) -> CrashingClient:
        clients.append(CrashingClient(ctx, n, after_answer))
        return clients[-1]

    with RunSession(ctx, client_factory=factory) as session, pytest.raises(Crash):
        run_chunk(session, specs[0])
    return clients[0]


def trimmed_somewhere(frame) -> bool:
    """Whether a conversation dropped old pairs: a turn evaluated fewer prompt tokens than the one before."""
    counts = frame["prompt_eval_count"].to_list()
    chunks = frame["chunk"].to_list()
    return any(chunks[i] == chunks[i - 1] and counts[i] < counts[i - 1] for i in range(1, len(counts)))


@pytest.mark.parametrize("crash_at", [1, 6, 10])
def test_interrupted_conversation_resumes_from_its_ledger(sim_factory, tmp_path, monkeypatch, crash_at):
    expected = baseline(sim_factory, tmp_path)
    assert trimmed_somewhere(expected), "the test needs conversations long enough to trim"

    sim = sim_factory(**SIM)
    params = conversation_params(sim, tmp_path)
    ctx, specs = start(params)
    crash_in_first_chunk(ctx, specs, crash_at)
    assert sim.stats()["answered_total"] == crash_at - 1
    records, bad = ledger_records(ctx.dir)
    assert (len(records), bad) == (crash_at - 1, 0)  # every answer was in the ledger before the next request

    _ctx, summaries, stats = run_all(params)
    assert summaries[0]["sent"] == 12 - (crash_at - 1)  # only what the ledger lacked
    assert_same_results(ctx.dir, expected)  # same history, same trimming, same answers
    assert_answered_once(sim.stats(), expected=24)
    assert stats["requests"]["succeeded"] == 24 and stats["requests"]["reconciles"]


def test_answer_lost_before_its_ledger_write_is_the_only_request_sent_again(sim_factory, tmp_path, monkeypatch):
    """The at-least-once window: a process that dies after Ollama answered but before the ledger
    write loses that one answer, and a resume sends exactly that request again, nothing else."""
    expected = baseline(sim_factory, tmp_path)
    sim = sim_factory(**SIM)
    params = conversation_params(sim, tmp_path)
    ctx, specs = start(params)
    crashed = crash_in_first_chunk(ctx, specs, 5, after_answer=True)
    assert len(ledger_records(ctx.dir)[0]) == 4

    run_all(params)
    assert_same_results(ctx.dir, expected)
    fingerprints = sim.stats()["fingerprints"]
    twice = [fp for fp, c in fingerprints.items() if c["answered"] > 1]
    assert crashed.messages is not None and twice == [chat_fingerprint(*crashed.messages)]
    assert sim.stats()["answered_total"] == 25


def finished_run(sim_factory, tmp_path):
    sim = sim_factory(**SIM)
    params = conversation_params(sim, tmp_path)
    ctx, _summaries, _stats = run_all(params)
    return sim, params, ctx


def test_corrupt_checkpoint_is_rebuilt_from_the_ledger_without_sending(sim_factory, tmp_path):
    sim, params, ctx = finished_run(sim_factory, tmp_path)
    before = results(ctx.dir)
    path = RunPaths(ctx.dir).checkpoint(1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # torn
    assert load_checkpoint(path) is None

    _ctx, summaries, _stats = run_all(params)
    assert [s["from_checkpoint"] for s in summaries] == [True, False]
    assert summaries[1]["sent"] == 0
    assert load_checkpoint(path) is not None
    assert_same_results(ctx.dir, before)
    assert_answered_once(sim.stats(), expected=24)


def test_tampered_checkpoint_fails_its_digest_and_is_not_trusted(sim_factory, tmp_path):
    sim, params, ctx = finished_run(sim_factory, tmp_path)
    before = results(ctx.dir)
    path = RunPaths(ctx.dir).checkpoint(0)
    table = pq.read_table(path)
    responses = table.column("response").to_pylist()
    responses[3] = "tampered"
    tampered = table.set_column(table.schema.get_field_index("response"), "response", pa.array(responses))
    pq.write_table(tampered.replace_schema_metadata(table.schema.metadata), path)  # old digest kept
    assert DIGEST_KEY in pq.read_schema(path).metadata
    assert load_checkpoint(path) is None

    run_all(params)
    assert_same_results(ctx.dir, before)
    assert "tampered" not in results(ctx.dir)["response"].to_list()
    assert_answered_once(sim.stats(), expected=24)


def test_checkpoint_outlives_a_lost_ledger(sim_factory, tmp_path):
    sim, params, ctx = finished_run(sim_factory, tmp_path)
    before = results(ctx.dir)
    RunPaths(ctx.dir).ledger(0).unlink()
    _ctx, summaries, _stats = run_all(params)
    assert [s["sent"] for s in summaries] == [0, 0]
    assert_same_results(ctx.dir, before)
    assert_answered_once(sim.stats(), expected=24)


@pytest.mark.parametrize("damage", ["torn-tail", "flipped-byte"])
def test_damaged_ledger_line_is_dropped_and_only_its_request_sent_again(sim_factory, tmp_path, damage):
    sim, params, ctx = finished_run(sim_factory, tmp_path)
    before = results(ctx.dir)
    paths = RunPaths(ctx.dir)
    paths.checkpoint(1).unlink()  # the chunk must be rebuilt from its ledger
    ledger = paths.ledger(1)
    lines = ledger.read_bytes().splitlines(keepends=True)
    if damage == "torn-tail":
        victim = lines[-1]
        lines[-1] = victim[: len(victim) // 2]  # a crash in the middle of the last append
    else:
        victim = lines[4]
        at = victim.index(b'"response":"') + 14
        lines[4] = victim[:at] + bytes([victim[at] ^ 0x01]) + victim[at + 1:]  # checksum no longer matches
    ledger.write_bytes(b"".join(lines))
    lost = decode_line(victim)["_row"]

    _ctx, summaries, _stats = run_all(params)
    assert summaries[1]["sent"] == 1 and summaries[1]["ledger_lines_dropped"] == 1
    assert_same_results(ctx.dir, before)
    counts = sim.stats()["fingerprints"]
    assert sim.stats()["answered_total"] == 25
    assert sum(1 for c in counts.values() if c["answered"] == 2) == 1
    records, bad = ledger_records(ctx.dir)
    assert bad == 0  # the file was repaired: the next append starts on a clean line
    assert sorted(r["_row"] for r in records if r["chunk"] == 1).count(lost) == 1


def test_new_ledger_and_checkpoint_directories_are_made_durable(tmp_path, monkeypatch):
    """A fsynced line is only durable if the file's and the directories' entries are too."""
    import chunkwise.store.files
    import chunkwise.store.ledger
    from chunkwise.store.checkpoint import write_checkpoint
    from chunkwise.store.ledger import Ledger
    from chunkwise.store.records import outcome

    synced: list[Path] = []
    real = chunkwise.store.files.fsync_dir

    def record(path):
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(chunkwise.store.files, "fsync_dir", record)
    monkeypatch.setattr(chunkwise.store.ledger, "fsync_dir", record)
    run = tmp_path / "run"
    run.mkdir()
    with Ledger(run / "ledger" / "chunk-00000.jsonl") as ledger:
        ledger.append(outcome(_row=0, status="ok"))
        ledger.append(outcome(_row=1, status="ok"))
    assert synced == [run, run / "ledger"]  # the new directory in the run, the new file in the directory
    synced.clear()
    write_checkpoint(run / "chunks" / "chunk-00000.parquet", [outcome(_row=0, status="ok")])
    assert synced == [run, run / "chunks"]
