"""Children that die with the process that started them, however it dies (SIGKILL included).

Why: chunkwise starts long-lived children: Prefect's temporary API server (`chunkwise run`; it
holds a port and Prefect's SQLite database), llama-server (`chunkwise engine`, tests, benchmarks;
hundreds of MiB to GiB of memory) and the Prefect worker (`chunkwise worker`; an orphan would go on
taking shards for a host nobody checks any more). Each parent stops its child when it exits, on
Ctrl-C and on SIGTERM; a SIGKILL (the OOM killer, `kill -9`, a job manager) runs no cleanup, and the
child, adopted by init, runs until the machine reboots. Users resume a failed run by running the
command again, so such orphans pile up.

How: `tie(child)` starts a keeper, a small Python process (`python -m chunkwise.lifeline`, standard
library only, a few MiB) holding two file descriptors:

* the read end of a pipe whose write end only this process holds. Nothing is ever written to it:
  when this process dies, however it dies, the kernel closes the write end and the keeper reads EOF;
* a pidfd of the child (`os.pidfd_open`, Linux >= 5.3), opened by this process while the child is
  its unreaped child, so the keeper's signals reach that very process even if its pid is reused.

On EOF the keeper stops the child as the parents do: SIGTERM, then SIGKILL after `grace_s`
seconds. When the child exits first, the keeper exits too.

Why not the alternatives: Linux `PR_SET_PDEATHSIG` (prctl(2)) fires when the *thread* that forked
the child exits, not the process, and chunkwise starts children from threads (`chunkwise run`'s
early API thread ends as soon as the server answers: the signal would end the server with it); a
watchdog thread inside the child works only for Python children (llama-server is a C++ binary) and
changes how each child is started; polling `os.getppid()` wakes up every interval. The keeper
depends neither on the child's language nor on the thread that started it.

The keeper runs in its own session and ignores SIGINT, so a signal to the parent's process group
(Ctrl-C in the terminal, a closed terminal's SIGHUP, `kill -- -PGID`) does not end it before it has
done its work; the parent, if it survives such a signal, stops the child itself as before.

Limits: a kill in the few milliseconds between the child's spawn and the keeper's leaves that child
unkept. Without pidfd support (not Linux, kernel < 5.3) `tie` does nothing, and the parents' own
stop paths are all there is. This process's end of the pipe is closed when the child's `Popen`
object is collected (the parents drop it once they have stopped and reaped the child); a child
whose `Popen` object is dropped while it runs is stopped by its keeper, as if its parent had died.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import weakref
from typing import TypeVar

#: Seconds the keeper waits for a child to exit after its SIGKILL before giving up on it.
KILL_WAIT_S = 5.0

P = TypeVar("P", bound="subprocess.Popen[bytes]")


def tie(child: P, grace_s: float = 5.0) -> P:
    """Start a keeper that stops `child` (SIGTERM, SIGKILL after `grace_s` s) once this process is
    gone; returns `child`. Call it right after the spawn, before anything reaps the child."""
    if not hasattr(os, "pidfd_open") or child.poll() is not None:
        return child
    try:
        pidfd = os.pidfd_open(child.pid)
    except OSError:  # kernel < 5.3 (ENOSYS), or seccomp forbids it: the parents' stop paths remain
        return child
    read_end, write_end = os.pipe()  # both non-inheritable (PEP 446): no other child holds the write end
    try:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "chunkwise.lifeline", str(read_end), str(pidfd), repr(float(grace_s))],
            pass_fds=(read_end, pidfd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        os.close(write_end)
        return child
    finally:
        os.close(read_end)
        os.close(pidfd)
    # not at interpreter exit: the parent's own stop paths run first, then the kernel closes the pipe
    weakref.finalize(child, _release, write_end, keeper).atexit = False
    return child


def _release(write_end: int, keeper: subprocess.Popen[bytes]) -> None:
    """The child's handle is gone (stopped and reaped, normally): the keeper exits, or, were the child
    still running, stops it. The keeper is reaped here or by `subprocess`'s next spawn."""
    os.close(write_end)
    keeper.poll()


def keep(pipe_fd: int, pidfd: int, grace_s: float) -> None:
    """The keeper: wait until the parent is gone (EOF on the pipe) or the child has exited, whichever
    comes first; in the first case stop the child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    ready, _, _ = select.select([pipe_fd, pidfd], [], [])
    if pidfd in ready:
        return  # the child exited: nothing to keep
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return
        if select.select([pidfd], [], [], wait_s)[0]:
            return


if __name__ == "__main__":
    keep(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
