"""Process helpers for tests that kill parents and look for what outlived them (Linux /proc)."""

from __future__ import annotations

import os
import time
from pathlib import Path


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
