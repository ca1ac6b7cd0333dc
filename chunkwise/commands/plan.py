"""`chunkwise plan`: validate an input and show how it would be chunked and whether it fits the GPU,
without sending a single request (`chunkwise.plan.make`).

Kept fast (bench/plan_speed.py): this module imports only the standard library at load time; pyarrow,
httpx and the GPU module are imported inside `run`.
"""

from __future__ import annotations

import argparse
import json

from chunkwise.commands.common import add_shared_flags
from chunkwise.commands.flags import with_default

NAME = "plan"
HELP = ("Show the chunk plan, KV-cache fit and ETA for an input without sending any request; the input is "
        "checked exactly as `chunkwise run` would check it.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_shared_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--kv-cache-type", choices=("f16", "q8_0", "q4_0"), default="f16",
                        help=with_default("the server's KV cache type (OLLAMA_KV_CACHE_TYPE, llama-server "
                                          "--cache-type-k)", "f16"))
    parser.add_argument("--prefill-tps", type=float, metavar="X",
                        help="the whole server's prompt rate at this --parallel, tokens/s (for the ETA)")
    parser.add_argument("--decode-tps", type=float, metavar="X",
                        help="the whole server's generation rate at this --parallel, tokens/s (for the ETA)")


def run(args: argparse.Namespace) -> int:
    from chunkwise.commands.run import params_from_args
    from chunkwise.plan.make import make_plan

    plan = make_plan(params_from_args(args), kv_cache_type=args.kv_cache_type, prefill_tps=args.prefill_tps,
                     decode_tps=args.decode_tps)
    print(json.dumps(plan.as_dict(), indent=2) if args.json else plan.render())
    return 0
