"""`chunkwise engine`: run llama-server with the Gemma 3 270M model in the foreground on 127.0.0.1.

It serves the model as `gemma3-270m` on the OpenAI API (`/v1/chat/completions`), with `--parallel` slots
of `--num-ctx` tokens each (llama-server's `-c` is their total). `make engine` builds or fetches what it
needs. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal

from chunkwise.cli import fail
from chunkwise.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, SetupError

NAME = "engine"
HELP = ("Start the real engine (llama.cpp's llama-server with Gemma 3 270M, served as gemma3-270m) in the "
        "foreground on 127.0.0.1; `make engine` builds it first.")


#: Tokens of context per slot by default (llama-server `-c` is this x --parallel).
DEFAULT_SLOT_CTX = 2048


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chunkwise.commands.flags import add_alias

    parser.add_argument("--port", type=int, default=8080, help="TCP port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=4, metavar="N", help="slots, i.e. requests decoded at once "
                        "(llama-server -np; default: %(default)s)")
    parser.add_argument("--num-ctx", type=int, default=None, metavar="N",
                        help=f"context per slot, tokens (llama-server -c is this x --parallel; default: "
                        f"{DEFAULT_SLOT_CTX})")
    add_alias(parser, "--ctx", "--num-ctx", "total_ctx", type=int, note=" (per slot: the old --ctx / --parallel)")


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the engine the way Ctrl-C does."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.parallel < 1 or not 0 < args.port < 65536:
        raise SetupError("--parallel must be >= 1 and --port 1-65535")
    total = getattr(args, "total_ctx", None)
    slot_ctx = args.num_ctx or (total // args.parallel if total else DEFAULT_SLOT_CTX)
    if slot_ctx < 256:
        raise SetupError(f"--num-ctx {slot_ctx}: a slot needs at least 256 tokens of context")
    from chunkwise.harness.llama_server.server import EngineStartError, default_config, start_engine

    config = default_config(args.port, args.parallel, slot_ctx * args.parallel)
    engine = start_engine(config)  # an EngineStartError is a SetupError: the CLI prints it
    stop = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        seconds = engine.wait_ready()
        print(f"chunkwise engine: ready in {seconds:.1f} s at {config.url}/v1 (model {config.alias}, "
              f"{config.parallel} slots x {config.ctx // config.parallel} tokens, RSS {engine.rss_mib():.0f} MiB); "
              "Ctrl-C stops it", flush=True)
        engine.process.wait()
    except EngineStartError:
        engine.stop()
        raise
    except KeyboardInterrupt:
        engine.stop()
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, stop)
    code = engine.process.returncode
    fail(NAME, f"llama-server exited with {code}")
    return EXIT_OK if code == 0 else EXIT_CONFIG
