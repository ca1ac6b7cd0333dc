"""One sender per chunk: an exclusive, non-blocking flock per chunk, across processes."""

import pickle
import subprocess
import sys
import time

import pytest

from chunkwise.store import chunklock

HOLDER = (
    "import sys, time, pathlib; from chunkwise.store import chunklock; "
    "ok = chunklock.try_acquire(pathlib.Path(sys.argv[1]), int(sys.argv[2])); "
    "print('held' if ok else 'busy', flush=True); time.sleep(60)"
)


def _holder(run_dir, index):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(index)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_second_process_skips_a_held_chunk_and_the_lock_dies_with_its_holder(tmp_path):
    holder, said = _holder(tmp_path, 3)
    try:
        assert said == "held"
        assert not chunklock.try_acquire(tmp_path, 3)
        with pytest.raises(chunklock.ChunkBusy, match=rf"chunk 3 is being sent by another .*pid {holder.pid} on "), \
                chunklock.hold(tmp_path, 3):
            pass
        assert chunklock.try_acquire(tmp_path, 4)  # other chunks are free
        other, said_other = _holder(tmp_path, 4)  # ... and now held by this process
        assert said_other == "busy"
        other.kill()
        other.wait()
        chunklock.release(tmp_path, 4)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while not chunklock.try_acquire(tmp_path, 3):  # the kernel drops the flock with its owner
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not chunklock.try_acquire(tmp_path, 3)  # not re-entrant: one holder per chunk, even in-process
    chunklock.release(tmp_path, 3)
    with chunklock.hold(tmp_path, 3):
        assert not chunklock.try_acquire(tmp_path, 3)
    assert chunklock.try_acquire(tmp_path, 3)
    chunklock.release(tmp_path, 3)


def test_chunk_busy_survives_pickling():
    err = pickle.loads(pickle.dumps(chunklock.ChunkBusy(7, "pid 1 on a")))
    assert (err.index, err.owner) == (7, "pid 1 on a") and "chunk 7" in str(err)


def test_a_shard_lock_tells_a_live_shard_process_from_a_dead_one(tmp_path):
    path = chunklock.shard_lock_path(tmp_path, 2, 1)
    assert not chunklock.is_held(path)  # never taken
    code = ("import sys, time, pathlib; from chunkwise.store import chunklock; "
            "print(chunklock.try_acquire_path(pathlib.Path(sys.argv[1])), flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert chunklock.is_held(path) and chunklock.is_held(path)  # probing does not take it
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while chunklock.is_held(path):
        assert time.monotonic() < deadline
        time.sleep(0.05)
