"""Shards sized by time and dispatched ahead (issue 22 item 3), pure tier: the plan follows the rate the
run measures on its hosts and stays the same for a restarted parent; the parent launches the shards it
plans later; a worker holds the next shard while the current one sends, and that shard sends into the
slots its predecessor's tail frees, never a chunk twice."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chunkwise.cluster import hosts
from chunkwise.cluster.pace import host_rate, measured_rps, rest_planner
from chunkwise.cluster.parent import supervise
from chunkwise.cluster.turn import GiveUpWhenIdle, HostTurn, free_slots, sending_turn
from chunkwise.cluster.worker import WorkerConfig, worker_command, worker_env
from chunkwise.plan.chunks import plan_chunks
from chunkwise.plan.shards import (
    DEFAULT_HOST_RPS,
    OPENING_SHARDS,
    load_or_write,
    pending_chunks,
    plan_rest,
    plan_shards,
    plan_tapered,
    requests_per_shard,
)
from chunkwise.store import chunklock


def closings(run_dir: Path, label: str, rps: float, chunks: int, size: int, shard: int = 0, t0: float = 1000.0,
             ) -> None:
    """A host's facts for one shard sending from `t0`: its chunks closing one every size / rps s (the
    host answering `rps` requests/s)."""
    hosts.append_fact(run_dir, label, {"kind": "chunk-start", "shard": shard, "attempt": 0, "chunk": 0, "at": t0})
    for k in range(chunks):
        hosts.append_fact(run_dir, label, {"kind": "chunk", "shard": shard, "attempt": 0, "chunk": k,
                                           "at": t0 + (k + 1) * size / rps, "requests": size})


@pytest.mark.parametrize("rps", [48.0, 5.0])
def test_the_shard_size_follows_the_rate_measured_on_the_hosts(tmp_path, rps):
    specs = plan_chunks(200_000, 100)
    opening = load_or_write(tmp_path, specs, None, shard_seconds=60)
    assert len(opening) == OPENING_SHARDS and {s.requests for s in opening} == {60 * 5}  # the slow-host estimate
    assert pending_chunks(tmp_path)[0] == opening[-1].chunks[-1] + 1
    extend = rest_planner(tmp_path, 60)
    assert extend(False) == []  # nothing measured yet: wait
    closings(tmp_path, "gpu1", rps, chunks=12, size=100)
    closings(tmp_path, "gpu2", rps * 1.1, chunks=12, size=100, shard=1)
    closings(tmp_path, "gpu3", rps * 0.9, chunks=12, size=100, shard=2)
    rest = extend(False)
    assert rest is not None and rest[0].index == OPENING_SHARDS
    full = [s.requests for s in rest[1:-4]]  # the first takes the remainder, the last 4 taper
    assert all(abs(r - 60 * rps) <= 100 for r in full)  # 60 s at the median host's rate, whole chunks
    assert extend(False) is None  # planned once
    assert sum(s.requests for s in opening + rest) == 200_000


def test_the_rate_is_the_slope_of_a_hosts_closings_across_its_shards_and_needs_a_few(tmp_path):
    closings(tmp_path, "gpu1", 40.0, chunks=5, size=100)  # closings at +2.5 ... +12.5 s
    assert measured_rps(tmp_path) is None  # 5 closings over 10 s: not yet
    closings(tmp_path, "gpu1", 40.0, chunks=5, size=100, shard=1, t0=1012.5)  # the next shard, straight on
    rate = measured_rps(tmp_path)
    assert rate is not None and rate[0] == pytest.approx(40.0) and rate[1] == 1  # the ramp-up to +2.5 s left out
    # 256 in flight, every answer 5.33 s (48 req/s), chunks of 100: chunks close in rounds, several at once;
    # first-to-last closing reads 56, 47, 52, 45 req/s after 10 to 13 chunks, the slope 46-47 from the 11th
    for n in (11, 12, 13):
        rounds = [{"kind": "chunk", "shard": 0, "at": ((100 * c + 99) // 256 + 1) * 5.33, "requests": 100}
                  for c in range(n)]
        assert host_rate(rounds) == pytest.approx(256 / 5.33, rel=0.07)
    # a shard smaller than the slots: its chunks close together and say nothing about the rate
    together = [{"kind": "chunk", "shard": 0, "at": 4.0 + k * 0.001, "requests": 50} for k in range(8)]
    assert host_rate(together) is None
    assert host_rate([{"kind": "chunk-start", "shard": 0, "at": 1.0}]) is None


def test_with_no_host_measured_the_rest_is_planned_at_the_estimate_once_the_opening_is_done(tmp_path):
    specs = plan_chunks(20_000, 100)
    load_or_write(tmp_path, specs, None, shard_seconds=60)
    extend = rest_planner(tmp_path, 60)
    assert extend(False) == []
    rest = extend(True)
    assert rest and max(s.requests for s in rest) == pytest.approx(60 * DEFAULT_HOST_RPS, abs=100)


def test_a_restarted_parent_gets_the_same_shards_before_and_after_the_rest_is_planned(tmp_path):
    specs = plan_chunks(50_000, 100)
    opening = load_or_write(tmp_path, specs, None, shard_seconds=30)
    assert load_or_write(tmp_path, specs, None, shard_seconds=90) == opening  # the recorded plan wins
    pending = pending_chunks(tmp_path)
    rest = plan_rest(tmp_path, 48.0, "measured", shard_seconds=30)
    again = load_or_write(tmp_path, specs, None, shard_seconds=30)
    assert again == opening + rest and pending_chunks(tmp_path) == []
    assert [i for s in rest for i in s.chunks] == pending
    assert plan_rest(tmp_path, 10.0, "measured", shard_seconds=30) == []  # nothing re-planned
    assert [s.index for s in again] == list(range(len(again)))


def test_the_rest_holds_at_least_two_shards_per_host_seen(tmp_path):
    specs = plan_chunks(50_000, 100)
    opening = load_or_write(tmp_path, specs, None, shard_seconds=180, parallel=256)
    for k in range(8):  # eight hosts have started the opening shards; one host measured at 48 req/s
        closings(tmp_path, f"gpu{k}", 48.0, chunks=12 if k == 0 else 1, size=100, shard=k)
    rest = rest_planner(tmp_path, 180, parallel=256)(False)
    assert rest is not None and len(rest) >= 16  # not 180 s x 48 = 8,640 requests: 5 shards for 8 hosts
    pending = 50_000 - sum(s.requests for s in opening)
    assert max(s.requests for s in rest) <= pending // 16 * 1.5 + 100  # the first takes the remainder


def test_no_shard_of_the_rest_is_under_a_few_rounds_of_the_slots(tmp_path):
    specs = plan_chunks(12_000, 100)
    load_or_write(tmp_path, specs, None, shard_seconds=60, parallel=256)
    rest = plan_rest(tmp_path, 40.0, "measured", shard_seconds=60, hosts=3, parallel=256)
    assert min(s.requests for s in rest[:-4]) >= 4 * 256 - 100  # 3,900 pending / 6 = 650 would be under it


def test_opening_shards_hold_a_few_rounds_of_the_slots(tmp_path):
    specs = plan_chunks(100_000, 100)
    opening = load_or_write(tmp_path, specs, None, shard_seconds=60, parallel=256)
    assert len(opening) == OPENING_SHARDS and min(s.requests for s in opening) >= 4 * 256 - 100  # not 300


def test_a_fixed_shard_size_plans_everything_at_once(tmp_path):
    specs = plan_chunks(10_000, 100)
    shards = load_or_write(tmp_path, specs, 1000)
    assert len(shards) == 10 and pending_chunks(tmp_path) == []
    assert rest_planner(tmp_path, 60)(False) is None


def test_the_last_shards_taper_so_the_hosts_finish_together():
    specs = plan_chunks(20_000, 50)
    shards = plan_tapered(specs, 4000, first=3)
    sizes = [s.requests for s in shards]
    assert [s.index for s in shards] == list(range(3, 3 + len(shards)))
    assert [i for s in shards for i in s.chunks] == [s.index for s in specs] and sum(sizes) == 20_000
    assert sizes[-4:] == [2000, 2000, 1000, 1000] and all(s >= 2000 for s in sizes[:-4])
    assert max(sizes) <= 6000  # the first shard takes the remainder, at most half a size more
    assert [s.requests for s in plan_tapered(plan_chunks(2500, 100), 4000)] == [1500, 1000]  # the rest is short
    assert [s.requests for s in plan_tapered(plan_chunks(900, 100), 4000)] == [900]


def test_the_parent_launches_the_shards_planned_after_the_start():
    from tests.test_cluster_parent import FakePrefect

    specs = plan_chunks(600, 100)
    opening, later = plan_shards(specs[:2], 100), plan_shards(specs[2:], 400, first=2)
    fake = FakePrefect({})
    fake.completes = {"r:0:0": (0,), "r:1:0": (1,), "r:2:0": (2, 3, 4, 5)}
    answers: list[list | None] = [[], [], later, None]
    asked = []

    def extend(all_done):
        asked.append(all_done)
        return answers.pop(0) if answers else None

    tracks = supervise("r", opening, fake, lambda c: c in fake.done_chunks, sleep=lambda s: None, extend=extend)
    assert [k for k, _ in fake.launches] == ["r:0:0", "r:1:0", "r:2:0"]
    assert [t.shard.index for t in tracks] == [0, 1, 2] and all(t.done for t in tracks)
    assert asked[0] is False  # asked before the opening ended, and until it said no more


def test_a_worker_holds_the_next_shard_while_the_current_one_sends(tmp_path):
    cfg = WorkerConfig(pool="p", name="gpu1", ollama_host="http://10.0.0.5:11434", turn=str(tmp_path / "turn"))
    cmd = worker_command(cfg)
    assert cmd[cmd.index("--limit") + 1] == "2"
    assert worker_env(cfg, base={"PATH": "/bin"})["CHUNKWISE_WORKER_TURN"] == str(tmp_path / "turn")
    assert cmd[cmd.index("-m") + 1] == "chunkwise.cluster.lookahead"  # the second shard only while one sends
    plain = worker_command(WorkerConfig(pool="p", name="gpu1", ollama_host="http://10.0.0.5:11434"))
    assert plain[plain.index("-m") + 1] == "prefect" and plain[plain.index("--limit") + 1] == "1"


def test_the_worker_takes_the_next_shard_only_when_the_sending_one_nears_its_end(tmp_path, monkeypatch):
    """A worker holding two runs at once took two of a run's first shards in one poll while another host got
    none, and a slow host held a shard through its whole slow shard. It now takes one per poll, and the second
    only once the sending shard expects to end within LEAD_S (its `<turn>.ends`, from a live writer)."""
    import asyncio
    import json
    import os

    from prefect.workers.process import ProcessWorker

    from chunkwise.cluster.lookahead import LEAD_S, worker_class

    path = tmp_path / "turn"
    monkeypatch.setenv("CHUNKWISE_WORKER_TURN", str(path))
    offered: list[list[str]] = []

    async def submit(self, flow_run_response):
        offered.append(list(flow_run_response))
        return list(flow_run_response)

    def ends(at: float, pid: int = os.getpid()) -> None:
        (tmp_path / "turn.ends").write_text(json.dumps({"pid": pid, "ends_at": at}))

    monkeypatch.setattr(ProcessWorker, "_submit_scheduled_flow_runs", submit)
    worker = worker_class()(work_pool_name="p", limit=2)
    worker._limiter = type("Limiter", (), {"borrowed_tokens": 0})()
    poll = ["shard-0", "shard-1", "shard-2"]

    def take() -> list[str]:
        return asyncio.run(worker._submit_scheduled_flow_runs(poll))

    assert take() == ["shard-0"]  # one, never two in one poll
    worker._limiter.borrowed_tokens = 1
    assert take() == []  # its shard starts: no estimate of its end yet
    ends(time.time() + 5 * LEAD_S)
    assert take() == []  # sending, far from its end
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ends(time.time() + 1.0, pid=int(dead.stdout))
    assert take() == []  # near its end, but written by a process that is gone: says nothing
    ends(time.time() + LEAD_S - 5)
    assert take() == ["shard-0"]  # the next, started ahead


def test_a_sending_shard_keeps_its_expected_end_from_its_ended_chunks(tmp_path):
    """`Remaining`: requests not in an ended chunk over the rate of those in ended chunks; `EndsWriter` keeps
    it in `<turn>.ends` and removes it when the shard's turn ends."""
    from chunkwise.cluster.turn import EndsWriter, Remaining, read_ends

    now = [100.0]
    ended = [False, False, False, False]
    left = Remaining([100, 100, 100, 100], clock=lambda: now[0])
    assert left() is None  # not sending yet
    left.start([lambda k=k: ended[k] for k in range(4)])
    now[0] = 104.0
    assert left() is None  # nothing ended: no rate yet
    ended[0] = ended[1] = True
    assert left() == pytest.approx(200 / (200 / 4.0))  # 200 requests in 4 s: 200 more take 4 s
    writer = EndsWriter(tmp_path / "turn", left, every_s=0.02).start()
    try:
        deadline = time.monotonic() + 5
        while read_ends(tmp_path / "turn") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert read_ends(tmp_path / "turn") == pytest.approx(time.time() + 4.0, abs=1.0)
    finally:
        writer.stop()
    assert read_ends(tmp_path / "turn") is None and not (tmp_path / "turn.ends").exists()


class FakeHost:
    """A host's slots as one shard process sees them (its `RunSession.slots`), sending chunks of `rows`
    requests of `answer_s` each under the chunk locks, recording every chunk it sent and when."""

    def __init__(self, run_dir: Path, parallel: int, answer_s: float) -> None:
        self.run_dir, self.parallel, self.answer_s = run_dir, parallel, answer_s
        self.sent: list[tuple[str, int]] = []
        self.done: set[int] = set()
        self.lock = threading.Lock()

    def shard(self, name: str, chunks: list[int], events: dict[str, float]) -> None:
        slots = threading.BoundedSemaphore(self.parallel)
        events[f"{name} started"] = time.monotonic()  # process up, preflight done
        with sending_turn(str(self.run_dir / "turn"), lambda: free_slots(slots) > 0, settle_s=0.1) as waited:
            events[f"{name} sends"] = time.monotonic()
            events[f"{name} waited"] = waited
            for chunk in chunks:
                if chunk in self.done or not chunklock.try_acquire(self.run_dir, chunk):
                    continue  # checkpointed, or held by a live shard: never sent twice
                try:
                    threads = [threading.Thread(target=self.answer, args=(slots,)) for _ in range(self.parallel)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    with self.lock:
                        self.sent.append((name, chunk))
                        self.done.add(chunk)
                finally:
                    chunklock.release(self.run_dir, chunk)
            events[f"{name} ends"] = time.monotonic()

    def answer(self, slots: threading.BoundedSemaphore) -> None:
        with slots:
            time.sleep(self.answer_s)


def test_the_shard_started_ahead_sends_when_the_current_one_drains_and_nothing_is_sent_twice(tmp_path):
    host = FakeHost(tmp_path, parallel=4, answer_s=0.2)
    events: dict[str, float] = {}
    # shard 0 runs chunks 0-3; it is re-dispatched (attempt 1 covers them again) and shard 1 follows:
    # the worker holds the run started ahead while shard 0 sends
    first = threading.Thread(target=host.shard, args=("a0", [0, 1, 2, 3], events))
    first.start()
    time.sleep(0.02)
    ahead = threading.Thread(target=host.shard, args=("a1", [2, 3, 4, 5], events))
    ahead.start()
    first.join()
    ahead.join()
    assert sorted(c for _, c in host.sent) == [0, 1, 2, 3, 4, 5]  # each chunk once, whoever sent it
    assert events["a1 started"] < events["a0 ends"]  # offered (process up, preflight done) before a0 ended
    assert events["a1 waited"] > 0 and events["a1 sends"] > events["a0 sends"]  # then it waited for the turn


def test_the_turn_passes_at_the_tail_before_the_current_shard_ends(tmp_path):
    """The current shard's slots fill, then empty one by one (its last answers): the turn goes to the
    waiting shard once a slot has stayed idle for the settle time, while the current shard still runs."""
    slots = threading.BoundedSemaphore(2)
    turn = HostTurn(tmp_path / "turn")
    turn.take()
    watcher = GiveUpWhenIdle(turn, lambda: free_slots(slots) > 0, settle_s=0.1, poll_s=0.01).start()
    time.sleep(0.2)
    assert turn.held  # slots never filled yet (the shard's start): the turn stays
    slots.acquire()
    slots.acquire()
    time.sleep(0.2)
    assert turn.held  # every slot busy
    slots.release()  # the tail: one slot idle from here on
    nxt = HostTurn(tmp_path / "turn")
    got = threading.Event()
    threading.Thread(target=lambda: (nxt.take(), got.set()), daemon=True).start()
    assert got.wait(2.0) and not turn.held  # the next shard has it; the current one still holds a slot
    assert free_slots(slots) == 1
    watcher.stop()
    nxt.give_up()


def test_a_dead_holder_frees_the_turn(tmp_path):
    code = ("import sys,time;from chunkwise.cluster.turn import HostTurn;HostTurn(sys.argv[1]).take();"
            "print('held',flush=True);time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "turn")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        got = threading.Event()
        threading.Thread(target=lambda: (HostTurn(tmp_path / "turn").take(), got.set()), daemon=True).start()
        assert not got.wait(0.3)
        proc.kill()
        assert got.wait(5.0)
    finally:
        proc.kill()
        proc.wait()


def test_requests_per_shard_is_seconds_times_rate():
    assert requests_per_shard(180, 48) == 8640 and requests_per_shard(180, 5) == 900
