"""Where a run may read and write: its run directory inside the runs root, its input files inside the
inputs root (settings `runs_root`, `inputs_root`).

Whoever can create a flow run chooses its paths: the CLI's flags, the Prefect UI's form, a deployment's
parameters, the parent's shard runs (`run_dir`). With a Prefect server reachable from other hosts,
that is anyone holding its credential, and the process that runs the flow is a worker running as the
operator. So every path a run is given is checked against the roots the operator set in the worker's
environment, before anything is read or written: `..` that climbs out, an absolute path elsewhere,
and a symlink whose target lies outside (checked on the resolved path, and for every symlink already
inside an existing run directory) are refused with one line naming the path, the root and the setting.
A path inside its root, even through `..` or a symlink that stays inside, is accepted.
"""

from __future__ import annotations

import os
from pathlib import Path

from chunkwise.errors import UnsafePathError

RUNS_ROOT_SETTING = "CHUNKWISE_RUNS_ROOT"
INPUTS_ROOT_SETTING = "CHUNKWISE_INPUTS_ROOT"


def _resolved(path: str | Path, what: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        raise UnsafePathError(f"{what} {str(path)!r} cannot be resolved ({exc}); give a plain path") from None


def inside(root: Path, path: str | Path, *, what: str, setting: str) -> Path:
    """`path` resolved (relative to the working directory, symlinks followed); `UnsafePathError` unless it
    is `root` or lies under it. `what` names the parameter, `setting` the variable that moves the root."""
    base = root.resolve()
    target = _resolved(path, what)
    if target == base or base in target.parents:
        return target
    lexical = Path(os.path.abspath(path))
    how = " through a symlink" if lexical == base or base in lexical.parents else ""
    raise UnsafePathError(
        f"{what} {str(path)!r} resolves{how} to {target}, outside {base} ({setting}); use a path inside it, or "
        f"set {setting} on the machine running the flow"
    )


def check_run(output_dir: str | Path, inputs: dict[str, str | None], *, runs_root: Path, inputs_root: Path) -> None:
    """A run's paths: `output_dir` inside the runs root, each of `inputs` (parameter name -> path, None
    for one not given) inside the inputs root."""
    inside(runs_root, output_dir, what="output_dir", setting=RUNS_ROOT_SETTING)
    for what, path in inputs.items():
        if path:
            inside(inputs_root, path, what=what, setting=INPUTS_ROOT_SETTING)


def no_escaping_links(run_dir: Path, root: Path) -> None:
    """Refuse an existing run directory holding a symlink (at any depth) whose target lies outside
    `root`: the run would write through it (e.g. `chunks -> /home/someone`)."""
    base = root.resolve()
    for folder, dirs, files in os.walk(run_dir, followlinks=False):
        for name in (*dirs, *files):
            entry = Path(folder) / name
            if entry.is_symlink():
                target = entry.resolve()
                if target != base and base not in target.parents:
                    raise UnsafePathError(
                        f"run directory {run_dir} holds a symlink {entry} -> {target}, outside the runs root "
                        f"{base} ({RUNS_ROOT_SETTING}); remove the link"
                    )


def run_dir_inside(root: Path, run_dir: str | Path) -> Path:
    """A run directory named by a flow parameter (the shard flow's `run_dir`): strictly under the runs
    root (not the root itself), with no symlink in it that leaves the root. Returns it resolved."""
    resolved = inside(root, run_dir, what="run_dir", setting=RUNS_ROOT_SETTING)
    if resolved == root.resolve():
        raise UnsafePathError(f"run_dir {str(run_dir)!r} is the runs root itself; give a run directory inside it")
    if resolved.is_dir():
        no_escaping_links(resolved, root)
    return resolved
