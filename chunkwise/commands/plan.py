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
import sys
import threading
from typing import Any

from chunkwise.commands.common import SHARED_FIELDS, add_shared_flags
from chunkwise.units import MIB

NAME = "plan"
HELP = "Show the chunk plan, KV-cache fit and ETA for an input without sending any request."
SHOW_TIMEOUT_S = 2.0

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="PATH", help="Parquet file of requests")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_shared_flags(parser)
    parser.add_argument("--kv-cache-type", choices=("f16", "q8_0", "q4_0"), default="f16",
                        help="the server's OLLAMA_KV_CACHE_TYPE (default f16)")
    parser.add_argument("--prefill-tps", type=float, metavar="X", help="server prefill rate, tokens/s (for the ETA)")
    parser.add_argument("--decode-tps", type=float, metavar="Y", help="server decode rate, tokens/s (for the ETA)")


def _fail(message: str) -> int:
    print(f"chunkwise plan: {message}", file=sys.stderr)
    return 2


def validation_message(exc: Any) -> str:
    """One line from a pydantic ValidationError on RunParams, naming the flag and the value."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    msg = str(err.get("msg", exc)).removeprefix("Value error, ")
    if not loc:
        return msg
    flag = "--" + loc[0].replace("_", "-")
    return f"{flag} {err.get('input')!r}: {msg}"


def fetch_model_info(host: str, model: str) -> tuple[dict[str, Any] | None, str, float | None]:
    """(model_info, where it came from, weights MiB or None): the server's /api/show (weights from
    the model's file size in /api/tags), else unknown with the reason. There is no offline fallback:
    a plan is only as good as the server's own numbers.
    Raises chunkwise.ollama.client.ConfigError for a host that is not an http(s) URL."""
    from chunkwise.errors import LLMError, ModelNotFound
    from chunkwise.ollama.client import OllamaClient

    client = OllamaClient(host, connect_timeout_s=SHOW_TIMEOUT_S, read_timeout_s=SHOW_TIMEOUT_S, stream=False)
    try:
        info = client.show(model).get("model_info")
        if not isinstance(info, dict):
            raise LLMError("no model_info in /api/show")
        weights = None
        try:  # the model file's size is about the weights' size in memory
            sizes = [m.get("size") for m in client.tags() if model in (m.get("name"), m.get("model"))]
            weights = sizes[0] / MIB if sizes and sizes[0] else None
        except (LLMError, ValueError):
            pass
        return info, f"server /api/show at {client.host}", weights
    except ModelNotFound:
        return None, f"unknown (model {model!r} not on the server; `ollama pull {model}`)", None
    except (LLMError, ValueError):
        return None, "unknown (server unreachable; start it or pass --host)", None
    finally:
        client.close()


def free_vram() -> tuple[float | None, str | None]:
    from chunkwise.gpu import sampler as gpu

    try:
        return gpu.free_vram_mib()
    except Exception as exc:  # noqa: BLE001 - a GPU probe must never stop a plan
        return None, f"GPU probe failed: {exc}"


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from chunkwise.inputs.scan import validate_only
    from chunkwise.params import RunParams
    from chunkwise.plan.report import build_plan
    from chunkwise.settings import get_settings

    flags = {name: getattr(args, name) for name in SHARED_FIELDS if getattr(args, name) is not None}
    try:
        params = RunParams(input_path=args.input, **flags)
    except ValidationError as exc:
        return _fail(validation_message(exc))
    for flag in ("prefill_tps", "decode_tps"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            return _fail(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be positive")
    system_prompt = params.system_prompt
    if params.system_prompt_file:
        try:
            with open(params.system_prompt_file, encoding="utf-8") as f:
                system_prompt = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"--system-prompt-file {params.system_prompt_file}: cannot be read as UTF-8 text ({exc})")
    # The server and GPU probes (httpx and NVML imports, up to SHOW_TIMEOUT_S of network) overlap
    # with the input scan, which spends its time in Arrow code that releases the GIL.
    probes: dict[str, Any] = {}
    host = params.host or get_settings().ollama_host

    def probe() -> None:
        try:
            probes["model"] = fetch_model_info(host, params.model)
        except Exception as exc:  # noqa: BLE001 - a probe must never stop a plan, only a bad --host does
            from chunkwise.errors import ConfigError

            if isinstance(exc, ConfigError):
                probes["host_error"] = f"--host: {exc}"
            else:
                probes["model"] = (None, f"unknown (model_info probe failed: {exc})", None)
        probes["gpu"] = free_vram()

    prober = threading.Thread(target=probe, name="chunkwise-plan-probe", daemon=True)
    prober.start()
    try:
        summary = validate_only(params.input_path, num_ctx=params.num_ctx, num_predict=params.num_predict)
    except ValueError as exc:  # InputError and impossible limits
        return _fail(str(exc))
    finally:
        prober.join()  # bounded by SHOW_TIMEOUT_S per request
    if "host_error" in probes:
        return _fail(probes["host_error"])
    model_info, source, weights = probes.get("model", (None, "unknown (probe failed)", None))
    free, gpu_reason = probes.get("gpu", (None, "GPU probe failed"))
    try:
        plan = build_plan(summary, params, system_prompt=system_prompt, model_info=model_info,
                          model_info_source=source, free_vram_mib=free, gpu_reason=gpu_reason,
                          kv_cache_type=args.kv_cache_type,
                          prefill_tps=args.prefill_tps, decode_tps=args.decode_tps, weights_mib=weights)
    except ValueError as exc:
        return _fail(str(exc))
    print(json.dumps(plan.as_dict(), indent=2) if args.json else plan.render())
    return 0
