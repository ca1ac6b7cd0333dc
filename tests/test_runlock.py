"""One process per run directory: a second live process is refused with a clear message."""

import subprocess
import sys
import time

import pytest

from chunkwise.store import lock as runlock


def test_second_process_is_refused_and_lock_dies_with_its_owner(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, pathlib; from chunkwise.store import lock as runlock; "
         "runlock.acquire(pathlib.Path(sys.argv[1])); print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunLocked, match=rf"in use by another chunkwise process \(pid {holder.pid} on "):
            runlock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops the flock with its owner
        try:
            runlock.acquire(tmp_path)
            break
        except runlock.RunLocked:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    runlock.acquire(tmp_path)  # re-entrant within this process
    runlock.release(tmp_path)
