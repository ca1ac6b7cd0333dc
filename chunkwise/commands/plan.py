"""`chunkwise plan`: validate an input and show how it would be chunked and whether it fits the GPU,
without sending a single request.

Kept fast (the 170K-row sample plans in about 1.1-1.5 s, bench/plan_speed.py): this module imports
only the standard library at load time; pydantic, pyarrow, httpx and the GPU module are imported
inside `run`, the server and GPU probes run on a thread while the input is scanned, and the scan
reads only `id`, `prompt` and `system`.
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

from chunkwise.commands.common import SHARED_FIELDS, add_shared_flags

NAME = "plan"
HELP = "Show the chunk plan, KV-cache fit and ETA for an input without sending any request."

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="PATH", help="Parquet file of requests")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--api", choices=("ollama", "openai"), default="ollama",
                        help="server API: ollama (default) or openai (llama-server: its /props, /v1/models and the "
                             "GGUF header of the model file it loaded; other OpenAI servers give no KV layout)")
    add_shared_flags(parser)
    parser.add_argument("--kv-cache-type", choices=("f16", "q8_0", "q4_0"), default="f16",
                        help="the server's OLLAMA_KV_CACHE_TYPE (default f16)")
    parser.add_argument("--prefill-tps", type=float, metavar="X", help="server prefill rate, tokens/s (for the ETA)")
    parser.add_argument("--decode-tps", type=float, metavar="Y", help="server decode rate, tokens/s (for the ETA)")


def validation_message(exc: Any) -> str:
    """One line from a pydantic ValidationError on RunParams, naming the flag and the value."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    msg = str(err.get("msg", exc)).removeprefix("Value error, ")
    if not loc:
        return msg
    flag = "--" + loc[0].replace("_", "-")
    return f"{flag} {err.get('input')!r}: {msg}"


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from chunkwise.errors import ConfigError, SetupError
    from chunkwise.inputs.scan import validate_only
    from chunkwise.params import RunParams
    from chunkwise.plan.probe import free_vram
    from chunkwise.plan.report import build_plan
    from chunkwise.servers import backend_for
    from chunkwise.settings import get_settings

    flags = {name: getattr(args, name) for name in SHARED_FIELDS if getattr(args, name) is not None}
    try:
        params = RunParams(input_path=args.input, api=args.api, **flags)
    except ValidationError as exc:
        raise SetupError(validation_message(exc)) from None
    for flag in ("prefill_tps", "decode_tps"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise SetupError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be positive")
    system_prompt = params.system_prompt
    if params.system_prompt_file:
        try:
            with open(params.system_prompt_file, encoding="utf-8") as f:
                system_prompt = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SetupError(f"--system-prompt-file {params.system_prompt_file}: cannot be read as UTF-8 text "
                             f"({exc})") from None
    # The server and GPU probes (httpx and NVML imports, up to backend.PROBE_TIMEOUT_S of network per request)
    # overlap with the input scan, which spends its time in Arrow code that releases the GIL.
    probes: dict[str, Any] = {}
    settings = get_settings()
    backend = backend_for(params.api)

    def probe() -> None:
        try:
            facts = backend.probe(backend.resolve_host(params.host, settings), params.model, settings)
            probes["model"] = (facts.model_info, facts.source, facts.weights_mib, facts.version)
            probes["server"] = {"server_slot_ctx": facts.slot_ctx, "server_slots": facts.slots}
        except ConfigError as exc:  # a probe never stops a plan, only a bad --host does
            probes["host_error"] = f"--host: {exc}"
        probes["gpu"] = free_vram()

    prober = threading.Thread(target=probe, name="chunkwise-plan-probe", daemon=True)
    prober.start()
    try:
        summary = validate_only(params.input_path, num_ctx=params.num_ctx, num_predict=params.num_predict)
    except ValueError as exc:  # InputError and impossible limits
        raise SetupError(str(exc)) from None
    finally:
        prober.join()  # bounded by backend.PROBE_TIMEOUT_S per request
    if "host_error" in probes:
        raise SetupError(probes["host_error"])
    model_info, source, weights, version = probes.get("model", (None, "unknown (probe failed)", None, ""))
    free, gpu_reason = probes.get("gpu", (None, "GPU probe failed"))
    try:
        plan = build_plan(summary, params, system_prompt=system_prompt, model_info=model_info,
                          model_info_source=source, free_vram_mib=free, gpu_reason=gpu_reason,
                          kv_cache_type=args.kv_cache_type,
                          prefill_tps=args.prefill_tps, decode_tps=args.decode_tps, weights_mib=weights,
                          engine=backend.kv_engine(version), server_version=version,
                          fixed_slots=backend.context_fixed_at_start, **probes.get("server", {}))
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    print(json.dumps(plan.as_dict(), indent=2) if args.json else plan.render())
    return 0
