"""The run directory before the first request (`chunkwise.run.prepare`): open it (refusing an
unwritable place), pick a free name beside it, clear what a crash left behind, and stage the input
into it or reuse what it already staged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chunkwise.errors import SetupError
from chunkwise.inputs import stage as staging
from chunkwise.inputs.checks import input_checks
from chunkwise.inputs.staged import load_staged, staged_record
from chunkwise.logs import RunLogger, logger
from chunkwise.params import RunParams
from chunkwise.run.manifest import differences
from chunkwise.settings import get_settings
from chunkwise.store import lock as runlock
from chunkwise.store.confine import no_escaping_links
from chunkwise.store.files import ensure_dir, read_json
from chunkwise.store.layout import RunPaths, content_run_name, default_run_name, run_paths


def log() -> RunLogger:
    return logger("chunkwise.run.prepare")


def open_run_dir(params: RunParams, identity: str | None = None) -> tuple[RunPaths, dict[str, Any] | None]:
    """The run's paths and its existing manifest, if any; refuses unwritable or unsafe locations (an
    existing run directory holding a symlink out of the runs root). A new one is its owner's only
    (`chunkwise.store.files.modes`). A run given no name is named after `identity`
    (`chunkwise.run.manifest.run_identity`), else after its input and the time."""
    name = params.run_name or (content_run_name(params.input_path, identity) if identity
                               else default_run_name(params.input_path))
    paths = run_paths(params.output_dir, name)
    if paths.root.is_dir():
        no_escaping_links(paths.root, get_settings().runs_root_path())
    try:
        ensure_dir(paths.root)
        probe = paths.write_test
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SetupError(
            f"cannot write the run directory {paths.root} ({exc.strerror or exc}); "
            "choose an --output-dir you can write to"
        ) from None
    existing = read_json(paths.manifest) if paths.manifest.exists() else None
    return paths, existing


def remove_temp_files(run_dir: Path) -> None:
    """Temporary files a crash left behind (`.name.XXXX.tmp`, `.requests.parquet.tmp-PID`): never read,
    removed while this process holds the run's lock."""
    paths = RunPaths(run_dir)
    for folder in (run_dir, paths.chunks_dir, paths.ledger_dir):
        for leftover in folder.glob(".*.tmp*"):
            leftover.unlink(missing_ok=True)


def discard_new_run_dir(run_dir: Path) -> None:
    """A new run refused after staging (an input its mode cannot send) leaves nothing behind either."""
    paths = RunPaths(run_dir)
    for staged in (paths.staged, paths.requests, paths.rejects):
        staged.unlink(missing_ok=True)
    discard_empty_run_dir(run_dir)


def discard_empty_run_dir(run_dir: Path) -> None:
    """A new run whose input was refused leaves nothing behind (its directory held only the lock)."""
    runlock.release(run_dir)
    RunPaths(run_dir).lock.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass  # something else is in it: keep it


def stage_or_reuse(params: RunParams, paths: RunPaths, existing: dict[str, Any] | None) -> staging.StagedInput:
    """Stage the input, or reuse what this run directory already staged from the same file (the
    CLI's preflight, then the flow; every resume). A resume with another input is refused before
    anything is written: ledgers and checkpoints refer to requests.parquet by position."""
    source = Path(params.input_path)
    recorded = staged_record(paths.root)
    current = staging.fingerprint(source) if source.is_file() else None
    if existing is not None and current is not None and current != existing.get("input_fingerprint"):
        binding, _ = differences({"input_fingerprint": existing.get("input_fingerprint")},
                                 {"input_fingerprint": current})
        raise SetupError(
            f"run {paths.root.name} was started with different settings ({'; '.join(binding)}); resume with the "
            "same settings, or pass --new-run to start a fresh run beside it"
        )
    checks = input_checks(params)
    key = staging.staged_key(**checks)
    same = (recorded is not None and current == recorded["fingerprint"]
            and all(recorded.get(k) == v for k, v in key.items()))
    # A resume never re-stages (a changed option is refused by the manifest check, not by rewriting
    # requests.parquet); a new run re-uses what its preflight staged from the same file and limits.
    if recorded is not None and (existing is not None or same):
        if current is None:
            log().warning("input %s is gone; resuming from the run's staged copy of it", params.input_path)
        return load_staged(paths.root, source=params.input_path, fingerprint=recorded["fingerprint"],
                                   num_ctx=recorded["num_ctx"], num_predict=recorded["num_predict"])
    return staging.stage_input(params.input_path, paths.root, **checks)


def next_free_name(paths: RunPaths) -> str:
    base = paths.root.name
    for n in range(2, 10_000):
        candidate = f"{base}-{n}"
        if not (paths.root.parent / candidate).exists():
            return candidate
    raise SetupError(f"no free run name next to {paths.root}; pick one with --run-name")
