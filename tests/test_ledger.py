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
