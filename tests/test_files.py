"""Atomic writes and containment of every path a run writes."""

import pytest

from chunkwise.store.files import UnsafePathError, contained, read_json, write_atomic, write_json_atomic


def test_contained_refuses_escapes(tmp_path):
    assert contained(tmp_path, "run-1") == (tmp_path / "run-1").resolve()
    for bad in ("..", "../x", "/etc", "a/../../b"):
        with pytest.raises(UnsafePathError):
            contained(tmp_path, bad)


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "d" / "f.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "f.bin"
    write_atomic(target, b"old")

    def boom(handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, boom)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
