"""`chunkwise ollama`: run the real Ollama that `make ollama` built, in the foreground on 127.0.0.1.

Ollama v0.24.0 built from its Go module with this CPU's backend (or, with `--ollama-version 0.33.0`, the
v0.33.0 that `make ollama-next` built, whose engine is llama-server), serving `gemma3-270m` (Gemma 3 270M,
the packaged GGUF) from that version's model store. With it, a user without Ollama can try the real thing
in two commands: `make ollama`, then `chunkwise ollama` and `chunkwise run --host http://127.0.0.1:11434
--model gemma3-270m ...`. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal

from chunkwise.cli import fail
from chunkwise.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, SetupError
from chunkwise.harness.ollama_server.paths import VERSIONS

NAME = "ollama"
HELP = ("Start the real Ollama built by `make ollama` (v0.24.0, CPU, serving gemma3-270m; or v0.33.0 from `make "
        "ollama-next`) in the foreground on 127.0.0.1.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=11434, help="TCP port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--ollama-version", choices=VERSIONS, default=VERSIONS[0],
                        help="which built Ollama to serve: 0.24.0 (`make ollama`) or 0.33.0, whose engine is "
                        "llama-server (`make ollama-next`) (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=4, help="slots per loaded model, i.e. requests decoded at "
                        "once (OLLAMA_NUM_PARALLEL; default: %(default)s)")
    parser.add_argument("--max-queue", type=int, default=None, help="requests waiting for a model load before "
                        "Ollama answers 503 (OLLAMA_MAX_QUEUE; default: Ollama's own, 512)")
    parser.add_argument("--num-ctx", type=int, default=None, help="num_ctx, tokens per slot, for requests that set "
                        "none (OLLAMA_CONTEXT_LENGTH; chunkwise always sets it; default: Ollama's own, 4096 here)")


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the server the way Ctrl-C does."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.parallel < 1 or not 0 < args.port < 65536 or (args.max_queue is not None and args.max_queue < 1) \
            or (args.num_ctx is not None and args.num_ctx < 256):
        raise SetupError("--parallel and --max-queue must be >= 1, --num-ctx >= 256 tokens and --port 1-65535")
    from chunkwise.harness.ollama_server.paths import MODEL_NAME, ollama_paths
    from chunkwise.harness.ollama_server.server import OllamaConfig, OllamaStartError, start_ollama

    paths = ollama_paths(version=args.ollama_version)
    if not paths.stamp.is_file():
        raise SetupError(f"no Ollama v{paths.version} built in {paths.root}: run `{paths.setup_command}` first (it "
                         "builds Ollama from source the first time: minutes on 2 cores)")
    config = OllamaConfig(paths, args.port, args.parallel, args.max_queue, args.num_ctx)
    server = start_ollama(config)  # an OllamaStartError is a SetupError: the CLI prints it
    stop = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        seconds = server.wait_ready()
        print(f"chunkwise ollama: Ollama v{paths.version} ready in {seconds:.1f} s at {config.url} (model "
              f"{MODEL_NAME}, {args.parallel} slots); Ctrl-C stops it", flush=True)
        server.process.wait()
    except OllamaStartError:
        server.stop()
        raise
    except KeyboardInterrupt:
        server.stop()
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, stop)
    code = server.process.returncode
    fail(NAME, f"ollama serve exited with {code}")
    return EXIT_OK if code == 0 else EXIT_CONFIG
