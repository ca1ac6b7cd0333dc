"""Server slots are held only while a request is on the wire: a request waiting out its retry
backoff gives its slot to another request (pure: a fake client, no server, no Prefect)."""

from __future__ import annotations

import threading
import time

from chunkwise.backend import ChatRequest, ChatResult
from chunkwise.errors import ServerError
from chunkwise.params import RunParams
from chunkwise.plan.chunks import ChunkSpec
from chunkwise.run.chunk import _conversation, _independent
from chunkwise.run.context import RunContext
from chunkwise.run.session import RunSession
from tests.support.run_checks import chunkwise_env


class FlakyClient:
    """Every request fails its first attempt with a 500 after `wire_s` on the wire, then succeeds.
    Records (row, attempt) in the order the calls take a slot, and the most calls at once."""

    def __init__(self, wire_s: float = 0.2) -> None:
        self.wire_s = wire_s
        self.calls: list[tuple[str, int]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def chat(self, request: ChatRequest) -> ChatResult:
        prompt = request.messages[-1]["content"]
        with self._lock:
            attempt = 1 + sum(1 for p, _ in self.calls if p == prompt)
            self.calls.append((prompt, attempt))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.wire_s)
            if attempt == 1:
                raise ServerError("HTTP 500 from the fake server")
            return ChatResult(content="fine", done_reason="stop", prompt_eval_count=len(prompt) // 4,
                              eval_count=1, total_duration=1, load_duration=0, prompt_eval_duration=1,
                              eval_duration=1, wall_ns=1)
        finally:
            with self._lock:
                self.in_flight -= 1


def setup(tmp_path, client: FlakyClient, mode: str) -> tuple[RunContext, RunSession]:
    params = RunParams(input_path=str(tmp_path / "in.parquet"), output_dir=str(tmp_path), run_name="s", parallel=1,
                       num_ctx=4096, num_predict=64, mode=mode, max_attempts=3)
    ctx = RunContext(run_dir=str(tmp_path / "s"), params=params, host="http://127.0.0.1:9", system_prompt="",
                     input_fingerprint="x", model_digest="d", server_version="0.12.6", is_simulator=False,
                     send_truncate_false=True, chars_per_token=4.0)
    rt = RunSession(ctx, client_factory=lambda ctx: client)  # one slot (parallel 1), the fake client
    return ctx, rt


def test_backoff_gives_the_slot_to_the_next_request(tmp_path):
    client = FlakyClient()
    ctx, rt = setup(tmp_path, client, "independent")
    rows = [{"_row": i, "prompt": f"p{i}"} for i in range(2)]
    recorded: list[dict] = []
    with chunkwise_env(retry_base_delay_s=0.3, retry_max_delay_s=0.3):
        _independent(ctx, rt, ChunkSpec(index=0, start=0, stop=2, first_row=0, last_row=1), rows, recorded.append)
    assert sorted(r["status"] for r in recorded) == ["ok", "ok"]
    first, second = client.calls[0][0], client.calls[1][0]
    # while the first request waits out its backoff, the other one is sent on the freed slot
    assert second != first, client.calls
    assert client.max_in_flight == 1  # and never more requests on the wire than slots


def test_a_conversation_keeps_its_one_slot_through_a_backoff(tmp_path):
    client = FlakyClient(wire_s=0.01)
    ctx, rt = setup(tmp_path, client, "conversation")
    rows = [{"_row": i, "prompt": f"p{i}"} for i in range(2)]
    recorded: list[dict] = []
    held_during_backoff: list[bool] = []
    real_sleep = rt.stop.wait

    def wait(timeout: float) -> bool:  # the backoff sleep: is the conversation's slot still taken?
        held_during_backoff.append(not rt.slots.acquire(blocking=False) or rt.slots.release() is not None)
        return real_sleep(timeout)

    rt.stop.wait = wait  # type: ignore[method-assign]
    with chunkwise_env(retry_base_delay_s=0.01, retry_max_delay_s=0.01):
        _conversation(ctx, rt, ChunkSpec(index=0, start=0, stop=2, first_row=0, last_row=1), rows, {0, 1}, {},
                      lambda outcome: recorded.append(outcome))
    assert [r["status"] for r in recorded] == ["ok", "ok"]
    assert held_during_backoff == [True, True]  # one slot, kept: its prefix cache stays on that slot


class ThreadCountingClient:
    """Answers after `wire_s`; records which threads sent and the most requests on the wire at once."""

    def __init__(self, wire_s: float = 0.02) -> None:
        self.wire_s = wire_s
        self.threads: set[int] = set()
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def chat(self, request: ChatRequest) -> ChatResult:
        with self._lock:
            self.threads.add(threading.get_ident())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.wire_s)
        with self._lock:
            self.in_flight -= 1
        return ChatResult(content="fine", done_reason="stop", prompt_eval_count=2, eval_count=1, wall_ns=1)

    def close(self) -> None:
        pass


def test_chunks_in_flight_share_one_sender_pool_bounded_by_the_slots(tmp_path):
    """Eight independent chunks of 20 rows at once, 2 slots: every request goes through the run's one pool of
    2 x parallel threads (each chunk used to open its own pool: 8 x 4 threads for 2 slots; at 256 slots and
    25 chunks that was 3,000 threads)."""
    client = ThreadCountingClient()
    ctx, rt = setup(tmp_path, client, "independent")
    ctx = ctx.model_copy(update={"params": ctx.params.model_copy(update={"parallel": 2})})
    rt = RunSession(ctx, client_factory=lambda ctx: client)
    recorded: list[dict] = []
    lock = threading.Lock()

    def chunk(k: int) -> None:
        rows = [{"_row": 20 * k + i, "prompt": f"p{20 * k + i}"} for i in range(20)]
        spec = ChunkSpec(index=k, start=20 * k, stop=20 * k + 20, first_row=20 * k, last_row=20 * k + 19)

        def record(outcome: dict) -> None:
            with lock:
                recorded.append(outcome)

        _independent(ctx, rt, spec, rows, record)

    runners = [threading.Thread(target=chunk, args=(k,)) for k in range(8)]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    rt.close()
    assert sorted(r["_row"] for r in recorded) == list(range(160))
    assert client.max_in_flight == 2
    assert len(client.threads) <= 4, len(client.threads)


def test_an_answer_keeps_its_slot_until_its_record_is_durable(tmp_path):
    """What a kill can cost is bounded by the slots: a request gives its slot back only once its answer is in
    the ledger, so never more than `parallel` requests are on the wire or answered but not yet recorded (a
    SIGKILL loses exactly those; the fault matrix measured 3 re-sent with 2 slots when the slot went back
    before the record's fsync)."""
    client = FlakyClient(wire_s=0.0)
    client.calls = [(f"p{i}", 1) for i in range(4)]  # first attempts "already failed": every call succeeds
    ctx, rt = setup(tmp_path, client, "independent")
    rows = [{"_row": i, "prompt": f"p{i}"} for i in range(4)]
    lock, unrecorded, worst = threading.Lock(), [0], [0]
    real_chat = client.chat

    def chat(request: ChatRequest) -> ChatResult:
        with lock:
            unrecorded[0] += 1
            worst[0] = max(worst[0], unrecorded[0])
        return real_chat(request)

    def record(outcome: dict) -> None:  # a slow fsync: another request has ample time to take a free slot
        time.sleep(0.3)
        with lock:
            unrecorded[0] -= 1

    client.chat = chat  # type: ignore[method-assign]
    _independent(ctx, rt, ChunkSpec(index=0, start=0, stop=4, first_row=0, last_row=3), rows, record)
    assert unrecorded[0] == 0
    assert worst[0] == 1  # parallel 1: the next request waited for the previous record
