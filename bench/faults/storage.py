"""The run directory's file system failing under a running `chunkwise run` (needs root: mounts).

* Disk full while the ledger is being written: the output directory is a small file system of its own (a
  tmpfs, and a loop-mounted ext4 image, whose delayed allocation can report ENOSPC at fsync rather than at
  write); once 10 answers are in the ledger, a filler file takes every free byte. README's recovery: free
  space (the filler is deleted), run the same command again.
* The output directory turning read-only: an ext4 image mounted `errors=remount-ro`, as a disk that meets an
  I/O error turns itself read-only; the error is raised through ext4's `trigger_fs_error` (sysfs), so every
  open file of the run starts failing with EROFS at once. (A read-only bind remount is refused with EBUSY
  while the run holds a file open for writing: it cannot happen under a running run.) Recovery: unmount,
  e2fsck, mount read-write, run the same command again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.faults.common import (
    SIMULATOR,
    Ctx,
    Row,
    finish,
    first_record_after,
    ledger_count,
    lost,
    receipts,
    run_args,
    run_env,
    session_text,
    spawn,
    stops,
    wait_for,
    write_input,
)
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions

PARALLEL = 2
N = 60
SIM = SimOptions(port=0, parallel=PARALLEL, answer_tokens=(30, 60), decode_tps=100, seed=5)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def mounted(path: Path, kind: str, size_mib: int = 24) -> Iterator[Path]:
    """A file system of `size_mib` MiB at `path` (tmpfs, or an ext4 image mounted errors=remount-ro); unmounted
    and removed on exit. Yields the image (ext4) or `path` (tmpfs)."""
    path.mkdir(parents=True)
    image = path.with_suffix(".img")
    if kind == "tmpfs":
        sh("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path))
    else:
        sh("truncate", "-s", f"{size_mib}M", str(image))
        sh("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        sh("mount", "-o", "loop,errors=remount-ro", str(image), str(path))
    try:
        yield image if kind == "ext4" else path
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0 or not os.path.ismount(path):
                break
            time.sleep(0.5)
        image.unlink(missing_ok=True)


def fill(path: Path) -> Path:
    """Write a filler file at `path` until the file system refuses (ENOSPC at write or at fsync)."""
    block = b"\0" * (64 << 10)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            for _ in range(16):
                os.write(fd, block)
            os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return path


def stop_and_resume(ctx: Ctx, name: str, out: Path, fault: Callable[[], None], heal: Callable[[], None]) -> Row:
    """Start the run into `out`, `fault()` once 10 answers are recorded, wait for it to stop, `heal()`, run the
    same command again."""
    source, ids = write_input(ctx.tmp / f"{name}.parquet", N, name)
    log, run_dir = ctx.tmp / f"{name}.log", out / name
    with running_simulator(SIM) as sim:
        args = run_args(source, sim.url, out, name, parallel=PARALLEL)
        proc = spawn(args, run_env(ctx), log)
        wait_for(lambda: proc.poll() is not None or ledger_count(run_dir) >= 10, 300, f"{name}: 10 answers")
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: the run ended before the fault ({proc.returncode})")
        fault()
        faulted = time.monotonic()
        exits = [finish(proc)]
        stop_s = time.monotonic() - faulted
        stopped = session_text(log)
        recorded = ledger_count(run_dir)
        heal()
        healed = time.time()
        exits.append(finish(spawn(args, run_env(ctx), log)))
        once, resent = receipts(sim.stats()["fingerprints"])
    kind, lines = stops([stopped])
    return Row(name_of[name], SIMULATOR, "independent", PARALLEL, N, once, resent, resent, lost(run_dir, ids), exits,
               first_record_after(run_dir, healed), kind,
               [*lines, f"stopped {stop_s:.1f} s after the fault with {recorded} answers in the ledger"])


name_of = {"disk-full-tmpfs": "Disk full while the ledger is written (tmpfs)",
           "disk-full-ext4": "Disk full while the ledger is written (ext4 image)",
           "read-only": "Output directory turns read-only (ext4 errors=remount-ro)"}


def disk_full(ctx: Ctx, kind: str) -> Row:
    name = f"disk-full-{kind}"
    where = ctx.tmp / name
    with mounted(where, kind):
        filler = where / "filler"

        def fault() -> None:
            fill(filler)

        return stop_and_resume(ctx, name, where, fault, filler.unlink)


def read_only(ctx: Ctx) -> Row:
    where = ctx.tmp / "read-only"
    with mounted(where, "ext4") as image:
        device = Path(subprocess.run(["findmnt", "-no", "SOURCE", str(where)], capture_output=True, text=True,
                                     check=True).stdout.strip()).name

        def fault() -> None:
            Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("chunkwise fault matrix\n")

        def heal() -> None:
            sh("umount", str(where))
            subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, timeout=120)  # exit 1: errors fixed
            sh("mount", "-o", "loop,errors=remount-ro", str(image), str(where))

        return stop_and_resume(ctx, "read-only", where, fault, heal)


def family(ctx: Ctx) -> list[Row]:
    return [disk_full(ctx, "tmpfs"), disk_full(ctx, "ext4"), read_only(ctx)]
