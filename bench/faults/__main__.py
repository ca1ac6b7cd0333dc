"""`python -m bench.faults [FAMILY ...] [--dry]` (`make faults`): every fault family in turn, or the named ones,
then bench/results/fault_matrix.md. Needs root for the storage, postgres and partition families (mounts; PostgreSQL
runs as its own user; network namespaces). Exits 1 when a family could not run or a row could not be injected."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.faults.common import Ctx, Row
from bench.faults.report import write
from tests.support.ui_helpers import prefect_server

#: Family name -> module (each has `family(ctx) -> list[Row]`), in the order of the table.
FAMILIES = {"kills": "bench.faults.kills", "llm": "bench.faults.llm_server", "prefect": "bench.faults.prefect_api",
            "storage": "bench.faults.storage", "postgres": "bench.faults.postgres",
            "partition": "bench.faults.partition"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="*", choices=[*FAMILIES, []], help="families to run (default: all)")
    ap.add_argument("--dry", action="store_true", help="print the table, do not write the results files")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, run directories)")
    args = ap.parse_args(argv)
    chosen = args.families or list(FAMILIES)
    tmp = Path(tempfile.mkdtemp(prefix="chunkwise-faults-"))
    started = time.monotonic()
    results: dict[str, tuple[list[Row], float]] = {}
    failed = []
    try:
        home = tmp / "prefect-home"
        with prefect_server(home, log=tmp / "prefect-server.log") as api_url:
            ctx = Ctx(tmp=tmp, api_url=api_url, prefect_home=home)
            for name in chosen:
                print(f"== {name}", flush=True)
                t0 = time.monotonic()
                try:
                    results[name] = (importlib.import_module(FAMILIES[name]).family(ctx), time.monotonic() - t0)
                except Exception:  # noqa: BLE001 - one family's harness failure must not lose the others' rows
                    traceback.print_exc()
                    failed.append(name)
                print(f"== {name} done in {time.monotonic() - t0:.0f} s", flush=True)
        write(results, list(FAMILIES), save=not args.dry, total_s=time.monotonic() - started)
    finally:
        if args.keep or failed:
            print(f"scratch kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    # a fault this machine cannot inject is a row saying so, and the matrix is not complete: never a silent pass
    failed += [f"{name} ({row.not_run})" for name, (rows, _) in results.items() for row in rows if row.not_run]
    if failed:
        print(f"families that could not run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
