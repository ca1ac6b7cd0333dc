"""`make ollama` and `make ollama-next`: a real Ollama (v0.24.0 or v0.33.0), idempotently.

`python -m chunkwise.harness.ollama_server.setup [--version V]`. Builds or reuses one Ollama version and this
CPU's backend in the user's cache (`build.py`), fetches or reuses the Gemma 3 270M GGUF (shared with `make
engine`), and creates that version's models in its model store with a temporary loopback server (`models.py`).
Exit 0 when everything is in place, 2 with a one-line reason (a missing toolchain, an unreachable proxy, a
failed step and its log) otherwise. v0.24.0 (the default, run by `make test`): about 6 minutes the first time
on 2 cores; v0.33.0: about 13 minutes, 15-30 on a loaded machine. About a second after. Each version has its
own lock, so `make ollama` never waits for a v0.33.0 build.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chunkwise.errors import EXIT_CONFIG, EXIT_OK, SetupError
from chunkwise.harness.llama_server.build import cache_lock
from chunkwise.harness.llama_server.fetch import ensure_model
from chunkwise.harness.llama_server.paths import engine_paths
from chunkwise.harness.ollama_server.build import ensure_built
from chunkwise.harness.ollama_server.models import ensure_models
from chunkwise.harness.ollama_server.paths import VERSION, VERSIONS, OllamaPaths, ollama_paths
from chunkwise.harness.ollama_server.server import running_ollama


def ensure_ollama(paths: OllamaPaths | None = None, log: Callable[[str], None] = print) -> OllamaPaths:
    """Everything `running_ollama(paths=paths)` needs, built or created where missing; returns the paths."""
    paths = paths or ollama_paths()
    engine = engine_paths()
    with cache_lock(engine.root):
        gguf = ensure_model(engine, log)
    with cache_lock(paths.version_dir):
        binary, lib = ensure_built(paths, log)
        with running_ollama(1, paths=paths, log_path=paths.version_dir / "create.log") as server:
            created = ensure_models(server, gguf)
        if created:
            log(f"ollama: created {', '.join(created)} in {paths.models}")
        paths.stamp.write_text(json.dumps({"version": paths.version, "binary": str(binary), "cpu_backend": lib.name,
                                           "models": str(paths.models)}, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chunkwise.harness.ollama_server.setup",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root (default: ${XDG_CACHE_HOME:-~/.cache}/chunkwise/ollama)")
    parser.add_argument("--version", choices=VERSIONS, default=VERSION,
                        help="the Ollama version to set up (default: %(default)s)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    paths = ollama_paths(args.cache_dir, args.version)
    try:
        ensure_ollama(paths)
    except SetupError as exc:
        print(f"{paths.setup_command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    backend = json.loads(paths.stamp.read_text())["cpu_backend"]
    print(f"ollama ready in {time.monotonic() - start:.1f} s: v{paths.version} at {paths.binary} (CPU backend "
          f"{backend}), models in {paths.models}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
