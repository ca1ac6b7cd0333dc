"""`chunkwise.lifeline.tie`: a child dies with the process that started it, even one killed with SIGKILL,
and even when a thread that has since exited started it (slow: real processes, about 2 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import children_of, survivors_of_a_kill, watched

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# Ties two children from a thread that then exits: one that ignores SIGTERM (the keeper must follow
# up with SIGKILL after the grace) and a plain one; reports whether they outlived that thread.
FROM_A_THREAD = r"""
import json, subprocess, sys, threading, time
from chunkwise.lifeline import tie
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(120)")
procs = {}
def start():
    procs["stubborn"] = tie(subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE), grace_s=0.5)
    procs["stubborn"].stdout.readline()
    procs["plain"] = tie(subprocess.Popen(["sleep", "120"]))
thread = threading.Thread(target=start)
thread.start()
thread.join()
try:
    procs["plain"].wait(timeout=0.5)  # PR_SET_PDEATHSIG would have ended it when the thread exited
except subprocess.TimeoutExpired:
    pass
print(json.dumps({name: [p.pid, p.poll() is None] for name, p in procs.items()}), flush=True)
time.sleep(120)
"""

# A tied child that exits by itself: its keeper exits too, and the parent keeps no descriptor for it.
CHILD_EXITS = r"""
import gc, json, os, subprocess, time
from chunkwise.lifeline import tie
from tests.support.procs import children_of, gone
fds = len(os.listdir("/proc/self/fd"))
child = tie(subprocess.Popen(["cat"], stdin=subprocess.PIPE))
keepers = [pid for pid in children_of(os.getpid()) if pid != child.pid]
child.stdin.close()
child.wait()
del child
gc.collect()
print(json.dumps({"keepers": len(keepers), "left": [k for k in keepers if not gone(k)],
                  "fds_added": len(os.listdir("/proc/self/fd")) - fds}))
"""


def test_children_tied_from_a_finished_thread_outlive_it_and_die_with_a_sigkilled_parent():
    parent = subprocess.Popen([sys.executable, "-c", FROM_A_THREAD], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    with watched(parent) as started:
        seen = json.loads(parent.stdout.readline())
        assert seen["plain"][1] and seen["stubborn"][1], f"a child died with the thread that started it: {seen}"
        started.update(children_of(parent.pid))
        assert len(started) == 4  # two children, two keepers
        left = survivors_of_a_kill(parent, started)
        assert not left, f"outlived the killed parent: {left}"


def test_a_child_that_exits_by_itself_leaves_no_keeper_and_no_descriptor():
    done = subprocess.run([sys.executable, "-c", CHILD_EXITS], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {"keepers": 1, "left": [], "fds_added": 0}


# `chunkwise worker`'s supervisor with `sleep` as the Prefect worker and a host that is always usable.
SUPERVISOR = r"""
import subprocess
from chunkwise.cluster.worker import WorkerConfig, supervise_worker
cfg = WorkerConfig(pool="p", name="w", ollama_host="http://127.0.0.1:1", check_s=0.05, grace_s=1)
supervise_worker(cfg, log=lambda message: None, usable=lambda: (True, ""),
                 spawn=lambda: subprocess.Popen(["sleep", "120"]))
"""


def test_a_sigkilled_worker_supervisor_takes_its_prefect_worker_with_it():
    parent = subprocess.Popen([sys.executable, "-c", SUPERVISOR], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    with watched(parent) as started:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(started) < 2:  # the worker, then its keeper
            started.update(children_of(parent.pid))
            time.sleep(0.05)
        assert any(cmd == "sleep 120" for cmd in started.values()), started
        left = survivors_of_a_kill(parent, started)
        assert not left, f"outlived the killed supervisor: {left}"
