"""Benchmark helpers: peak RSS of a process tree, sampled from /proc (Linux), the report file, and the
roots a benchmark's `chunkwise run` children may use."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

#: Environment for a benchmark's `chunkwise run` children (README "Security"): their run directories are
#: in temporary directories, their inputs wherever the benchmark keeps its data.
RUN_ROOTS = {"CHUNKWISE_RUNS_ROOT": tempfile.gettempdir(), "CHUNKWISE_INPUTS_ROOT": "/"}


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler:
    """A daemon thread running `_loop` from `with` entry until exit; `_loop` returns once `_stop` is set."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakRss(Sampler):
    """Samples every `interval_s` the RSS of `pid` alone and of its whole process tree."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        super().__init__()
        self.pid, self.interval_s = pid, interval_s
        self.peak_self = self.peak_tree = 0.0

    def _loop(self) -> None:
        while not self._stop.is_set() and os.path.exists(f"/proc/{self.pid}"):
            own = rss_mib(self.pid)
            total = sum(rss_mib(p) for p in tree(self.pid))
            self.peak_self, self.peak_tree = max(self.peak_self, own), max(self.peak_tree, total)
            time.sleep(self.interval_s)



def publish(lines: list[str], path: Path, *, write: bool = True, keep_notes: bool = False) -> None:
    """Print a benchmark's markdown report and, unless asked not to, save it as `path`; with
    `keep_notes`, as the head of `path`, keeping the file's hand-written `## ` sections below it."""
    report = "\n".join(lines) + "\n"
    print(report)
    if not write:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if keep_notes and path.exists() else ""
    notes = old[old.index("\n## ") + 1:] if "\n## " in old else ""
    path.write_text(report + ("\n" + notes if notes else ""), encoding="utf-8")


def replace_section(path: Path, head: list[str], label: str, section: list[str]) -> None:
    """Write `section` (its first line `## label`) into the results file at `path`, replacing an
    earlier section of the same label and keeping the others; a new file starts with `head`."""
    text = path.read_text(encoding="utf-8") if path.exists() else "\n".join(head) + "\n"
    parts = text.split("\n## ")
    kept = [parts[0].rstrip("\n") + "\n"] + ["## " + p.rstrip("\n") + "\n" for p in parts[1:]
                                              if not p.startswith(label + "\n")]
    path.write_text("\n".join([*kept, "\n".join(section)]), encoding="utf-8")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat fields 14 and 15), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class TreeCpu(Sampler):
    """Samples every `interval_s` the CPU seconds of each process in `pid`'s tree: `samples[pid]` is a list of
    (time.perf_counter_ns(), CPU s), `commands[pid]` its command line."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        super().__init__()
        self.pid, self.interval_s = pid, interval_s
        self.samples: dict[int, list[tuple[int, float]]] = {}
        self.commands: dict[int, str] = {}

    def _loop(self) -> None:
        while not self._stop.is_set() and os.path.exists(f"/proc/{self.pid}"):
            for p in tree(self.pid):
                used = cpu_s(p)
                if used is not None:
                    self.samples.setdefault(p, []).append((time.perf_counter_ns(), used))
                    if p not in self.commands:
                        self.commands[p] = cmdline(p)
            time.sleep(self.interval_s)

    def between(self, pid: int, start_ns: int, stop_ns: int) -> float:
        """CPU seconds `pid` used between the samples nearest `start_ns` and `stop_ns`."""
        series = self.samples.get(pid) or [(0, 0.0)]

        def at(ns: int) -> float:
            return min(series, key=lambda s: abs(s[0] - ns))[1]

        return at(stop_ns) - at(start_ns)
