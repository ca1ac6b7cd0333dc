"""The per-request ledger: durable appends, torn and corrupt lines never trusted."""

from chunkwise.store.ledger import Ledger, decode_line, encode_line


def test_append_then_load_returns_latest_record_per_row(tmp_path):
    path = tmp_path / "ledger" / "chunk-00000.jsonl"
    with Ledger(path) as ledger:
        ledger.append({"_row": 1, "status": "failed"})
        ledger.append({"_row": 2, "status": "ok"})
        ledger.append({"_row": 1, "status": "ok"})
    loaded = Ledger(path).load()
    assert loaded == {1: {"_row": 1, "status": "ok"}, 2: {"_row": 2, "status": "ok"}}


def test_torn_tail_is_dropped_and_file_repaired(tmp_path):
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append({"_row": 1, "response": "a"})
        ledger.append({"_row": 2, "response": "b"})
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # crash in the middle of the second line
    ledger = Ledger(path)
    assert set(ledger.load()) == {1}
    assert ledger.dropped == 1
    # the file was rewritten without the torn line, so a new append starts on a clean line
    with ledger:
        ledger.append({"_row": 3, "response": "c"})
    assert set(Ledger(path).load()) == {1, 3}


def test_flipped_byte_fails_the_checksum(tmp_path):
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append({"_row": 1, "response": "answer one"})
        ledger.append({"_row": 2, "response": "answer two"})
    data = bytearray(path.read_bytes())
    first_end = data.index(b"\n")
    data[first_end - 5] ^= 0x01  # corrupt the first record's payload, keep the line intact
    path.write_bytes(bytes(data))
    ledger = Ledger(path)
    assert set(ledger.load()) == {2}
    assert ledger.dropped == 1


def test_line_round_trip_and_rejects_garbage():
    line = encode_line({"_row": 7, "text": "ünïcode"})
    assert decode_line(line) == {"_row": 7, "text": "ünïcode"}
    assert decode_line(line[:-1]) is None  # no newline: torn
    assert decode_line(b"zzzzzzzz {}\n") is None
    assert decode_line(b"\n") is None


def test_appends_that_finish_together_share_one_fsync_and_a_crash_loses_nothing_acknowledged(tmp_path, monkeypatch):
    """Group commit: while one fsync is under way, the appends written meanwhile wait for the next
    one, which covers them all; no append returns before an fsync that started after its write
    finished. The "crash" keeps only the bytes the last finished fsync covered."""
    import os
    import threading

    import chunkwise.store.ledger as ledger_module

    path = tmp_path / "ledger" / "chunk-00000.jsonl"
    durable = {"bytes": 0}
    fsyncs: list[int] = []
    first_started, release_first = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        size = os.fstat(fd).st_size  # what this fsync covers: what was written before it started
        fsyncs.append(size)
        if len(fsyncs) == 1:
            first_started.set()
            assert release_first.wait(10)
        real_fsync(fd)
        durable["bytes"] = size

    ledger = Ledger(path)
    ledger.append({"_row": 100, "status": "ok"})  # the file and its directories exist before the fsyncs are watched
    line_bytes = path.stat().st_size
    monkeypatch.setattr(ledger_module.os, "fsync", slow_fsync)
    acknowledged: list[tuple[int, int]] = []  # (row, durable bytes when its append returned)
    lock = threading.Lock()

    def append(row: int) -> None:
        ledger.append({"_row": row, "status": "ok"})
        with lock:
            acknowledged.append((row, durable["bytes"]))

    first = threading.Thread(target=append, args=(0,))
    first.start()
    assert first_started.wait(10)  # row 0's fsync is under way and held
    others = [threading.Thread(target=append, args=(row,)) for row in range(1, 9)]
    for t in others:
        t.start()
    deadline = threading.Event()
    while path.stat().st_size < 9 * line_bytes and not deadline.wait(0.01):
        pass  # the eight appends write their lines (about as long as row 100's) while the first fsync is held
    assert acknowledged == []  # nothing is acknowledged before its fsync
    release_first.set()
    for t in [first, *others]:
        t.join(10)
    ledger.close()
    assert sorted(row for row, _ in acknowledged) == list(range(9))
    assert len(fsyncs) == 2  # one for row 0, one shared by the eight written while it ran
    assert ledger.syncs_saved == 7
    # crash right after the last acknowledgement: only what an fsync finished is on the disk
    data = path.read_bytes()
    path.write_bytes(data[: durable["bytes"]] + b"0badf00d {\"_row\": 99")  # plus a torn, never-acknowledged tail
    recovered = Ledger(path)
    assert set(recovered.load()) == {100, *range(9)}  # every acknowledged answer survived
    assert recovered.dropped == 1
    for row, covered in acknowledged:
        assert row in {r["_row"] for r in map(decode_line, data[:covered].splitlines(keepends=True)) if r}


def test_a_failed_fsync_acknowledges_nothing_and_the_next_append_syncs_again(tmp_path, monkeypatch):
    import os

    import pytest

    import chunkwise.store.ledger as ledger_module

    path = tmp_path / "l.jsonl"
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_once(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    with Ledger(path) as ledger:
        ledger.append({"_row": 0, "status": "ok"})  # the file exists: only the ledger's own fsyncs follow
        monkeypatch.setattr(ledger_module.os, "fsync", failing_once)
        with pytest.raises(OSError):
            ledger.append({"_row": 1, "status": "ok"})
        ledger.append({"_row": 2, "status": "ok"})
    assert calls["n"] == 2 and ledger.syncs_saved == 0  # row 1's line was never counted as synced


class _GatedLock:
    """Wraps the ledger's sync lock: the thread named `gated` stops in front of it until `opened`
    is set (after its line is written, before its fsync), so a `close` can run exactly there."""

    def __init__(self, lock, at_gate, opened) -> None:
        self.lock, self.at_gate, self.opened = lock, at_gate, opened

    def __enter__(self):
        import threading

        if threading.current_thread().name == "gated":
            self.at_gate.set()
            assert self.opened.wait(10)
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def _racing_append(ledger, row):
    """Start an append of `row` in a thread that is held after its write, before its fsync."""
    import threading

    at_gate, opened = threading.Event(), threading.Event()
    ledger._sync_lock = _GatedLock(ledger._sync_lock, at_gate, opened)
    outcome: dict = {}

    def append() -> None:
        try:
            ledger.append({"_row": row, "status": "ok"})
            outcome["returned"] = True
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["raised"] = exc

    thread = threading.Thread(target=append, name="gated")
    thread.start()
    assert at_gate.wait(10)
    return thread, opened, outcome


def test_close_while_an_append_waits_for_its_fsync_makes_that_line_durable(tmp_path, monkeypatch):
    """A chunk that stops (cancelled, Ctrl-C) may close its ledger while another thread's append has
    written its line and waits for the fsync. That append must not return acknowledged unless an fsync
    of the ledger covered its line: here the closed descriptor's number is taken by another file before
    the append goes on, so an fsync of the stale number would sync the wrong file and "succeed"."""
    import os

    import chunkwise.store.ledger as ledger_module

    path = tmp_path / "l.jsonl"
    ledger = Ledger(path)
    ledger.append({"_row": 0, "status": "ok"})
    synced: list[tuple[int, int]] = []  # (inode, size) of every fsync from now on
    real_fsync = os.fsync

    def watched_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_size))
        real_fsync(fd)

    monkeypatch.setattr(ledger_module.os, "fsync", watched_fsync)
    thread, opened, outcome = _racing_append(ledger, 1)
    ledger.close()
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o644)  # reuses the closed descriptor's number
    try:
        opened.set()
        thread.join(10)
        assert not thread.is_alive()  # never hangs
    finally:
        os.close(other)
    assert "raised" not in outcome and outcome.get("returned")
    st = os.stat(path)
    assert (st.st_ino, st.st_size) in synced  # an fsync of the ledger itself covered row 1's line
    assert set(Ledger(path).load()) == {0, 1}


def test_close_whose_fsync_fails_acknowledges_no_racing_append(tmp_path, monkeypatch):

    import pytest

    import chunkwise.store.ledger as ledger_module
    from chunkwise.errors import ChunkwiseError

    path = tmp_path / "l.jsonl"
    ledger = Ledger(path)
    ledger.append({"_row": 0, "status": "ok"})

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ledger_module.os, "fsync", failing_fsync)
    thread, opened, outcome = _racing_append(ledger, 1)
    ledger.close()  # the close does not raise: the append whose line it could not sync does
    opened.set()
    thread.join(10)
    assert not thread.is_alive()
    assert "returned" not in outcome
    assert isinstance(outcome["raised"], ChunkwiseError) and "resume" in str(outcome["raised"])
    with pytest.raises(ChunkwiseError):
        ledger.append({"_row": 2, "status": "ok"})


def test_append_after_close_raises_a_clear_error_and_writes_nothing(tmp_path):
    """A straggler (a request thread still finishing after its chunk stopped) must not reopen a closed
    ledger: the chunk's lock may already belong to another process. Its answer is not acknowledged,
    so a resume sends it again."""
    import pytest

    from chunkwise.errors import ChunkwiseError, RunInterrupted

    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append({"_row": 0, "status": "ok"})
    with pytest.raises(RunInterrupted) as raised:
        ledger.append({"_row": 1, "status": "ok"})
    assert isinstance(raised.value, ChunkwiseError)
    assert "closed" in str(raised.value) and "input row 1" in str(raised.value)
    assert set(Ledger(path).load()) == {0}
