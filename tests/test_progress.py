"""Progress per finished request, from the ledger files (pure: no Prefect, no terminal)."""

from __future__ import annotations

from chunkwise.run.progress import LedgerTail, ProgressWatch, RunProgress, format_eta
from chunkwise.store.ledger import Ledger, encode_line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ok(row: int) -> dict:
    return {"_row": row, "status": "ok", "error_class": None}


def failed(row: int, cls: str) -> dict:
    return {"_row": row, "status": "failed", "error_class": cls}


def test_every_appended_line_moves_the_progress_and_a_torn_tail_waits(tmp_path):
    ledger_dir = tmp_path / "ledger"
    watch = ProgressWatch(tmp_path, requests_total=10, chunks_total=2).start()
    assert watch.model.snapshot().requests_done == 0
    with Ledger(ledger_dir / "chunk-00000.jsonl") as a, Ledger(ledger_dir / "chunk-00001.jsonl") as b:
        a.append(ok(0))
        assert watch.poll() and watch.model.snapshot().requests_done == 1  # one answer is visible at once
        b.append(failed(5, "transient"))
        a.append(ok(1))
    with open(ledger_dir / "chunk-00001.jsonl", "ab") as handle:  # a line being written: not yet counted
        handle.write(encode_line(ok(6))[:-4])
    assert watch.poll()
    snap = watch.model.snapshot()
    assert (snap.requests_done, snap.ok, snap.failed_by_class) == (3, 2, {"transient": 1})
    assert snap.percent == 30.0
    with open(ledger_dir / "chunk-00001.jsonl", "ab") as handle:
        handle.write(encode_line(ok(6))[-4:])
    assert watch.poll() and watch.model.snapshot().requests_done == 4
    assert not watch.poll()  # nothing new


def test_a_row_sent_again_replaces_its_earlier_outcome():
    progress = RunProgress(requests_total=3, chunks_total=1)
    progress.add([failed(0, "transient"), ok(1)], earlier_session=True)
    progress.add([ok(0)])  # --retry-failed answered it this time
    snap = progress.snapshot()
    assert (snap.requests_done, snap.ok, snap.failed_by_class, snap.session_done) == (2, 2, {}, 1)


def test_rate_and_eta_count_only_this_sessions_answers():
    clock = Clock()
    progress = RunProgress(requests_total=100, chunks_total=4, clock=clock)
    progress.add([ok(i) for i in range(40)], earlier_session=True)  # from the crashed session
    snap = progress.snapshot()
    assert snap.percent == 40.0 and snap.rate is None and snap.eta_s is None
    for i in range(40, 61):  # 21 answers over 10 s: 2 requests/s
        progress.add([ok(i)])
        clock.now += 0.5
    snap = progress.snapshot()
    assert snap.requests_done == 61 and snap.session_done == 21
    assert abs(snap.rate - 20 / 10) < 0.11 and abs(snap.eta_s - 39 / snap.rate) < 1e-6
    line = snap.line()
    assert line.startswith("61/100 requests (61.0%), 0 failed, 2.") and "ETA 20 s" in line and "0/4 chunks" in line


def test_tail_reads_a_repaired_file_again(tmp_path):
    path = tmp_path / "chunk-00000.jsonl"
    with Ledger(path) as ledger:
        ledger.append(ok(0))
        ledger.append(ok(1))
    tail = LedgerTail(tmp_path)
    assert [r["_row"] for r in tail.poll()] == [0, 1]
    path.write_bytes(encode_line(ok(0)))  # rewritten shorter (a torn line dropped by a repair)
    assert [r["_row"] for r in tail.poll()] == [0]


def test_eta_reads_like_a_person_would_say_it():
    assert (format_eta(None), format_eta(42.4), format_eta(125), format_eta(7260)) == (
        "unknown", "42 s", "2 min 05 s", "2 h 01 min")


def test_a_poll_of_named_files_reads_only_those_and_the_rest_waits_for_the_next_full_poll(tmp_path):
    with Ledger(tmp_path / "chunk-00000.jsonl") as a, Ledger(tmp_path / "chunk-00001.jsonl") as b:
        a.append(ok(0))
        b.append(ok(5))
    tail = LedgerTail(tmp_path)
    assert [r["_row"] for r in tail.poll(["chunk-00001.jsonl"])] == [5]
    assert [r["_row"] for r in tail.poll()] == [0]  # row 5 is not read twice
    assert tail.poll() == []  # unchanged files (same size as already read) give nothing


def test_a_finished_chunk_counts_its_own_answers_at_once(tmp_path, caplog):
    from tasks.progress import Progress

    progress = Progress(2, "r", run_dir=tmp_path, requests_total=4, artifacts=False)
    with Ledger(tmp_path / "ledger" / "chunk-00001.jsonl") as ledger:
        ledger.append(ok(2))
        ledger.append(ok(3))
    progress.chunk_finished({"index": 1, "ok": 2, "failed": 0, "sent": 2}, "chunk 2/2")
    assert progress.percent == 50.0  # read with the chunk's end, before the flow's next tick
    with Ledger(tmp_path / "ledger" / "chunk-00000.jsonl") as ledger:
        ledger.append(ok(0))
    progress.tick()
    assert progress.percent == 75.0
