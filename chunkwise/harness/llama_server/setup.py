"""`make engine` (`python -m chunkwise.harness.llama_server.setup`): everything the real engine needs, idempotently.

Builds or reuses the cached llama-server, fetches or reuses the model, checks the chat template.
Exit 0 when all three are in place, 2 (configuration) with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

from chunkwise.errors import EXIT_CONFIG, EXIT_OK
from chunkwise.harness.llama_server.build import cache_lock, ensure_server
from chunkwise.harness.llama_server.fetch import EngineSetupError, ensure_model
from chunkwise.harness.llama_server.paths import TEMPLATE, engine_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chunkwise.harness.llama_server.setup",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None,
                        help="cache root (default: ${XDG_CACHE_HOME:-~/.cache}/chunkwise/engine)")
    args = parser.parse_args(argv)
    paths = engine_paths(args.cache_dir)
    start = time.monotonic()
    try:
        server = ensure_server(paths)
        with cache_lock(paths.root):
            model = ensure_model(paths)
        if not TEMPLATE.is_file():
            raise EngineSetupError(f"{TEMPLATE}: the chat template is missing from the checkout; restore it with git")
    except EngineSetupError as exc:
        print(f"make engine: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"engine ready in {time.monotonic() - start:.1f} s: server {server}, model {model}, template {TEMPLATE}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
