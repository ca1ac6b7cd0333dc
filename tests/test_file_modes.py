"""Private by default (issue 23, point 3): a run's directory and every file in it, Prefect's result
files included, are created readable by their owner only (0700 / 0600), whatever the umask of the
shell that started it; CHUNKWISE_FILE_MODE=group widens that to 0750 / 0640 for a group sharing the
runs root, never to other users.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkwise.settings import get_settings
from chunkwise.store.files import ensure_dir, write_atomic
from tests.support.pipeline_helpers import params_for, write_requests


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask of a typical shell (022: new files readable by everyone), restored afterwards."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def file_mode(monkeypatch):
    def use(mode: str) -> None:
        monkeypatch.setenv("CHUNKWISE_FILE_MODE", mode)
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of `root` and of everything under it (symlinks not followed)."""
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.usefixtures("loose_umask")
@pytest.mark.parametrize("mode, dir_mode, file_mode_bits", [("private", 0o700, 0o600), ("group", 0o750, 0o640)])
def test_store_writes_get_the_settings_modes(tmp_path, file_mode, mode, dir_mode, file_mode_bits):
    file_mode(mode)
    target = tmp_path / "a" / "b" / "f.json"
    write_atomic(target, b"{}")
    ensure_dir(tmp_path / "a" / "c")
    assert stat.S_IMODE(target.stat().st_mode) == file_mode_bits
    for d in ("a", "a/b", "a/c"):
        assert stat.S_IMODE((tmp_path / d).stat().st_mode) == dir_mode, d


@pytest.mark.usefixtures("prefect_harness", "loose_umask")
@pytest.mark.parametrize("mode, dir_mode, file_mode_bits", [("private", 0o700, 0o600), ("group", 0o750, 0o640)])
def test_every_file_of_a_new_run_is_closed_to_other_users(sim, tmp_path, file_mode, mode, dir_mode, file_mode_bits):
    from flows.batch import batch

    file_mode(mode)
    source = write_requests(tmp_path / "in.parquet", 12)
    out = tmp_path / "runs"  # created by the run
    params = params_for(sim, source, out, chunk_size=4, mode="independent")
    assert batch(params, return_state=True).is_completed()
    # a second flow run over the same run directory finds every chunk checkpointed: Prefect records the
    # chunk tasks' results (cache records) in t/prefect-results/
    assert batch(params, return_state=True).is_completed()
    found = modes_under(out)
    run = {name for name in found if name.startswith("t/")}
    # what a run writes: the staged input, ledgers, checkpoints, Prefect's result files, the results
    assert {"t/manifest.json", "t/requests.parquet", "t/results.parquet", "t/stats.json", "t/ledger/chunk-00000.jsonl",
            "t/chunks/chunk-00000.parquet", "t/.lock"} <= run, sorted(run)
    assert any(name.startswith("t/prefect-results/") for name in run), sorted(run)
    for name, bits in found.items():
        is_dir = (out / name).is_dir()
        assert bits & 0o007 == 0, f"{name} is open to other users: {bits:o}"
        assert bits & ~(dir_mode if is_dir else file_mode_bits) == 0, f"{name}: {bits:o} in mode {mode}"
    assert found["."] == found["t"] == dir_mode
    assert found["t/results.parquet"] == found["t/manifest.json"] == file_mode_bits
