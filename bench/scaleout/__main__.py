"""`python -m bench.scaleout [--part NAME] [flags]`: run one part, or (no --part) every part in turn with
the defaults below, which are what `make bench` runs (about 25 minutes on this machine's 2 cores).

The defaults measure the issue's goals: E(3) with one- and three-host runs of 720 requests per host
in 360-request shards; idle between shards with the default shard size (900 requests, about three
minutes of one host's work); failover with 160-request shards; the ceiling. Smaller shards and E(2):
`--part scaling --hosts 1,2,3 --per-host 480 --shard 160`, `--part shards --sizes 120,240 --requests 1440`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench.procs import replace_section
from bench.scaleout.ceiling import part_ceiling
from bench.scaleout.failover import part_failover
from bench.scaleout.report import HEAD, OUT, load, section
from bench.scaleout.throughput import part_scaling, part_shards

PARTS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "scaling": part_scaling, "shards": part_shards, "failover": part_failover, "ceiling": part_ceiling}
LABELS = {"scaling": "Scaling efficiency E(N)", "shards": "Dispatch overhead and tail against shard size",
          "failover": "Failover", "ceiling": "The ceiling of one orchestrating process"}
#: Per part: its flags and their defaults (a flag left out takes its part's default).
DEFAULTS: dict[str, dict[str, object]] = {
    "scaling": {"hosts": [1, 3], "per_host": 720, "shard": 360},
    "shards": {"sizes": [900], "requests": 5400},
    "failover": {"requests": 1440, "shard": 160},
    "ceiling": {"zero_requests": 6000, "shards": 100},
}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=sorted(PARTS), help="one part (default: every part in turn)")
    ap.add_argument("--per-host", type=int, help="scaling: requests per host (720)")
    ap.add_argument("--shard", type=int, help="scaling/failover: requests per shard (360 / 160)")
    ap.add_argument("--hosts", type=ints, help="scaling: host counts to run, the first 1: E(N) divides by it (1,3)")
    ap.add_argument("--sizes", type=ints, help="shards: shard sizes to compare (900)")
    ap.add_argument("--requests", type=int, help="shards/failover: requests per run (5400 / 1440)")
    ap.add_argument("--zero-requests", type=int, help="ceiling: requests at zero latency (6000)")
    ap.add_argument("--shards", type=int, help="ceiling: shard runs the parent launches (100)")
    ap.add_argument("--dry", action="store_true", help="print the sections, do not write the results file")
    return ap


def resolved(args: argparse.Namespace, part: str) -> tuple[argparse.Namespace, str]:
    """The part's arguments with its defaults filled in, and the command that repeats them."""
    values = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in DEFAULTS[part].items()}
    flags = " ".join(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in values.items())
    return argparse.Namespace(**values), f"python -m bench.scaleout --part {part} {flags}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for part in [args.part] if args.part else list(PARTS):
        before = load()
        part_args, command = resolved(args, part)
        body = PARTS[part](part_args)
        label = LABELS[part] + (f", shards of {part_args.shard}" if part == "scaling" else "")
        lines = section(label, command, before, body)
        print("\n".join(lines), flush=True)
        if not args.dry:
            replace_section(OUT, HEAD, label, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
