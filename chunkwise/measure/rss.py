"""The resident memory of a local Ollama's runner process (Linux /proc), for `chunkwise measure`.

Ollama serves each loaded model from a child process: `ollama runner ...` before v0.30
(`v0.24.0:llm/server.go` StartRunner), `llama-server` from v0.30 (`v0.33.0:llm/llama_server.go:369-377`). Its
VmRSS is what the model really holds in RAM on a CPU-only server, and VmHWM the peak (the runner starts anew
at each reload, so its peak belongs to the context loaded). The server is found by the socket listening on the
URL's port (/proc/net/tcp{,6}, then the process holding that socket), its runners among its children.

RSS is not /api/ps `size`: size counts the runner's ggml buffers (weights, KV cache, compute graph), RSS also
the process's code and heap, allocator slack, and buffers outside that account (see `RSS_NOTE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROC = Path("/proc")
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
#: Why RSS grows faster than /api/ps size on Ollama's engine (v0.24.0): each batch's attention mask is built
#: as f32 twice outside the counted buffers, a Go slice (`kvcache/causal.go:368`) and the input tensor it is
#: copied into (`ml/backend/ggml/ggml.go:972-981`, allocated per forward pass, counted neither as cache nor as
#: graph), 4 bytes x batch x cells each, besides the f16 copy in the compute graph that size counts; the Go heap
#: keeps the slices until its garbage collector returns them.
RSS_NOTE = (
    "runner RSS (VmRSS, read after each answer) is above /api/ps size and grows faster: size counts the runner's "
    "ggml buffers (weights, KV cache, compute graph), RSS also its code and heap, allocator slack and, on "
    "Ollama's engine, the f32 copies of each batch's attention mask outside those buffers (a Go slice, "
    "kvcache/causal.go:368, and an input tensor, ml/backend/ggml/ggml.go:972-981: 4 bytes x batch x cells each), "
    "which the Go heap returns only when its garbage collector runs; so the fit uses /api/ps size and RSS is an "
    "upper bound that varies from run to run"
)


@dataclass(frozen=True)
class RunnerMemory:
    """One runner's memory, MiB."""

    pid: int
    rss_mib: float
    peak_mib: float


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def server_pid(url: str) -> int | None:
    """The process listening on `url`'s port on this machine, or None (another user's, or none)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not sockets:
        return None
    for pid in _pids():
        try:
            fds = os.listdir(PROC / str(pid) / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(PROC / str(pid) / "fd" / fd) in sockets:
                    return pid
            except OSError:
                continue
    return None


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _kib(value: str) -> float:
    return int(value.split()[0]) / 1024


def runners(server: int) -> list[tuple[float, int, str]]:
    """(start time in clock ticks, pid, command line) of `server`'s child processes."""
    out = []
    for pid in _pids():
        try:
            stat = (PROC / str(pid) / "stat").read_text()
            cmdline = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == server:  # ppid
            out.append((float(fields[19]), pid, cmdline))  # starttime
    return out


def model_path(client: Any, model: str) -> str:
    """The GGUF the server loads for `model` (the FROM line of /api/show's modelfile), "" when it does not say:
    it names the runner process of that model."""
    try:
        text = str(client.show(model).get("modelfile") or "")
    except Exception:  # noqa: BLE001 - only narrows the runner search; any failure leaves it open
        return ""
    return next((line[5:].strip() for line in text.splitlines() if line.startswith("FROM /")), "")


def runner_memory(url: str, model_path: str = "") -> tuple[RunnerMemory | None, str]:
    """The memory of the runner serving `url`'s model loaded last (the one whose command line names
    `model_path` when given), and "" or why there is none."""
    server = server_pid(url)
    if server is None:
        return None, f"no process of this user listens on {url} (another user's server?)"
    children = [c for c in runners(server) if not model_path or model_path in c[2]]
    if not children:
        return None, f"the server (pid {server}) has no runner process" + (f" for {model_path}" if model_path else "")
    _, pid, _ = max(children)  # the newest: a reload starts a new runner
    try:
        status = _status(pid)
        return RunnerMemory(pid, _kib(status["VmRSS"]), _kib(status["VmHWM"])), ""
    except (OSError, KeyError, ValueError) as exc:
        return None, f"runner {pid} has no memory figures ({exc})"


def mem_total_mib() -> float | None:
    """MemTotal of /proc/meminfo in MiB (the capacity of a CPU-only server on this machine)."""
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return _kib(line.split(":", 1)[1])
    except OSError:
        return None
    return None
