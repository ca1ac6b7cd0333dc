"""`python -m tests.support.crash_child POINT <chunkwise arguments>`: the chunkwise CLI with one SIGKILL armed
at a point that polling from outside could not hit reliably (tests only):

    checkpoint  the checkpoint of the last unfinished chunk is complete in its temporary file and
                fsynced, but not yet renamed into place (the last one, so that no other chunk has a
                request in flight: an answer in flight at a kill is lost and must be sent again)
    results     results.parquet is complete in its temporary file, not yet renamed (aggregation)
    stats       results.parquet is in place, stats.json not yet written (aggregation)
    head-start  Prefect's API never comes up (the flow never starts), and the fifth answer the head start
                records is the last (`chunkwise.run.headstart`): killed with requests in flight

The process kills itself with SIGKILL (no cleanup, no atexit), exactly as an outside kill would.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


_writing: set[str] = set()  # checkpoint files being written by this process (chunk tasks run in threads)
_writing_lock = threading.Lock()


def _last_checkpoint(path) -> bool:
    """True for the write that completes the set: the files already renamed into place plus the
    other writes still under way number chunks - 1. Counting only renamed files missed the kill when
    the last two chunks wrote at the same moment (neither saw the other's file: CI, under load)."""
    import json

    chunks = json.loads((path.parent.parent / "manifest.json").read_text())["chunk_plan"]["chunks"]
    on_disk = {p.name for p in path.parent.glob("chunk-*.parquet")} - {path.name}
    return len(on_disk | _writing) >= chunks - 1


def _kill_inside_atomic_write(module, when=lambda path: True) -> None:
    real = module.write_atomic

    def write_then_die(path, write):
        with _writing_lock:
            last = when(path)
            _writing.add(path.name)
        if not last:
            try:
                return real(path, write)
            finally:
                with _writing_lock:
                    _writing.discard(path.name)
        def fill(handle):
            if isinstance(write, (bytes, bytearray)):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            _die()

        real(path, fill)

    module.write_atomic = write_then_die


def arm(point: str) -> None:
    if point == "checkpoint":
        import chunkwise.store.checkpoint

        _kill_inside_atomic_write(chunkwise.store.checkpoint, _last_checkpoint)
    elif point == "results":
        import chunkwise.results.assemble

        _kill_inside_atomic_write(chunkwise.results.assemble)
    elif point == "stats":
        import chunkwise.results.finish

        real = chunkwise.results.finish.write_json_atomic

        def write_json(path, data):
            if path.name == "stats.json":
                _die()
            real(path, data)

        chunkwise.results.finish.write_json_atomic = write_json
    elif point == "head-start":
        import chunkwise.commands.early_api
        import chunkwise.store.ledger

        chunkwise.commands.early_api.EarlyApi.wait = lambda self: threading.Event().wait()  # type: ignore[method-assign]
        real_append = chunkwise.store.ledger.Ledger.append
        recorded = [0]

        def append_then_die(self, record):
            real_append(self, record)
            with _writing_lock:
                recorded[0] += 1
                if recorded[0] >= 5:
                    _die()

        chunkwise.store.ledger.Ledger.append = append_then_die
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    arm(sys.argv[1])
    from chunkwise.cli import main

    sys.exit(main(sys.argv[2:]))
