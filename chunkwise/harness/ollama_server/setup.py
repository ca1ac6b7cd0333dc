"""`make ollama` (`python -m chunkwise.harness.ollama_server.setup`): a real Ollama, idempotently.

Builds or reuses Ollama v0.24.0 and this CPU's backend in the user's cache, fetches or reuses the Gemma 3
270M GGUF (shared with `make engine`), and creates the `gemma3-270m` and `gemma3-270m-damaged` models in the
cache's model store with a temporary loopback server. Exit 0 when everything is in place, 2 with a one-line
reason (a missing toolchain, an unreachable proxy, a failed step and its log) otherwise. First time about
6 minutes on 2 cores; about a second after.
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
from chunkwise.harness.ollama_server.build import ensure_built, this_cpu_variant
from chunkwise.harness.ollama_server.models import ensure_models
from chunkwise.harness.ollama_server.paths import VERSION, OllamaPaths, ollama_paths
from chunkwise.harness.ollama_server.server import running_ollama


def ensure_ollama(paths: OllamaPaths | None = None, log: Callable[[str], None] = print) -> OllamaPaths:
    """Everything `running_ollama()` needs, built or created where missing; returns the paths."""
    paths = paths or ollama_paths()
    engine = engine_paths()
    with cache_lock(engine.root):
        gguf = ensure_model(engine, log)
    with cache_lock(paths.root):
        binary, lib = ensure_built(paths, log)
        with running_ollama(1, paths=paths, log_path=paths.version_dir / "create.log") as server:
            created = ensure_models(server, gguf)
        if created:
            log(f"ollama: created {', '.join(created)} in {paths.models}")
        paths.stamp.write_text(json.dumps({"version": VERSION, "binary": str(binary), "cpu_backend": lib.name,
                                           "models": str(paths.models)}, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chunkwise.harness.ollama_server.setup",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root (default: ${XDG_CACHE_HOME:-~/.cache}/chunkwise/ollama)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        paths = ensure_ollama(ollama_paths(args.cache_dir))
    except SetupError as exc:
        print(f"make ollama: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"ollama ready in {time.monotonic() - start:.1f} s: v{VERSION} at {paths.binary} (CPU backend "
          f"{this_cpu_variant()}), models in {paths.models}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
