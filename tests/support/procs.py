"""Process helpers for tests that kill parents and look for what outlived them (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether process `pid` is gone (or a zombie awaiting its reaper) within `timeout_s` (checked at least once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def command_line(pid: int) -> str:
    """The command line of `pid`, arguments joined by spaces ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def children_of(pid: int) -> dict[int, str]:
    """The live (not zombie) processes whose parent is `pid`: pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found[int(entry)] = command_line(int(entry))
    return found


def kill_leftovers(started: dict[int, str]) -> None:
    """SIGKILL what is still running of `started` (pid -> command line), the command line checked
    first so that a reused pid is left alone: what outlived a test's parent must not outlive the test."""
    for pid, cmd in started.items():
        if not gone(pid, 0) and command_line(pid) == cmd.strip():
            try:
                os.kill(pid, 9)
            except OSError:
                pass


@contextlib.contextmanager
def watched(parent: subprocess.Popen[Any]) -> Iterator[dict[int, str]]:
    """Yield the record (pid -> command line) of `parent`'s children that the test fills in with
    `children_of`; on the way out, however the test ends, kill `parent` if it still runs and whatever
    of the recorded children is left (`kill_leftovers`)."""
    started: dict[int, str] = {}
    try:
        yield started
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        kill_leftovers(started)


def survivors_of_a_kill(parent: subprocess.Popen[Any], started: dict[int, str], timeout_s: float = 10.0) -> list[str]:
    """SIGKILL `parent`, reap it, and list ("pid: command line") those of `started` still running
    after `timeout_s` seconds: what a killed parent left behind."""
    parent.kill()
    parent.wait()
    return [f"{pid}: {cmd}" for pid, cmd in started.items() if not gone(pid, timeout_s)]
