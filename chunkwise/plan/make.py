"""A run's plan without sending a request (`chunkwise plan`, `chunkwise.plan(...)`): the input checked
exactly as `chunkwise run` would check it (`chunkwise.inputs.checks`: the same columns, limit, quarantine
and batch-line options), the server and this machine's GPU asked read-only, then `build_plan`.

Kept fast (the 170K-row sample plans in about 1.2-1.8 s, bench/plan_speed.py): the server and GPU probes
run on a thread while the input is scanned; the scan reads only the columns a request is made of.
"""

from __future__ import annotations

import threading
from typing import Any

from chunkwise.errors import ConfigError, InputError, SetupError
from chunkwise.inputs.checks import conversation_problem, input_checks, no_accepted_rows, with_file_model
from chunkwise.inputs.scan import validate_only
from chunkwise.ollama.kv import training_context
from chunkwise.params import MAX_PARALLEL, RunParams
from chunkwise.plan import probe as gpu_probe
from chunkwise.plan.figures import Plan
from chunkwise.plan.report import build_plan
from chunkwise.servers import backend_for
from chunkwise.settings import get_settings


def read_system_prompt(params: RunParams) -> str:
    if not params.system_prompt_file:
        return params.system_prompt
    try:
        with open(params.system_prompt_file, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise SetupError(f"system prompt file {params.system_prompt_file} does not exist; check "
                         "--system-prompt-file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"system prompt file {params.system_prompt_file} cannot be read as UTF-8 text ({exc}); "
                         "fix the file") from None


def make_plan(params: RunParams, *, kv_cache_type: str = "f16", prefill_tps: float | None = None,
              decode_tps: float | None = None) -> Plan:
    """The plan of a run with `params` (rates: the whole server's tokens/s, for the ETA). Raises a one-line
    `SetupError` for what `chunkwise run` would refuse before sending: a bad input, no accepted row."""
    for flag, value in (("--prefill-tps", prefill_tps), ("--decode-tps", decode_tps)):
        if value is not None and value <= 0:
            raise SetupError(f"{flag} {value}: must be positive")
    params = with_file_model(params)
    system_prompt = read_system_prompt(params)
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
        probes["gpu"] = gpu_probe.free_vram()  # looked up when called (tests replace it)

    # The server and GPU probes (httpx and NVML imports, up to backend.PROBE_TIMEOUT_S of network per request)
    # overlap with the input scan, which spends its time in Arrow code that releases the GIL.
    prober = threading.Thread(target=probe, name="chunkwise-plan-probe", daemon=True)
    prober.start()
    if "num_ctx" not in params.model_fields_set:
        # the default num_ctx follows what the server says (its slots' context, the model's trained one), and
        # the quarantine of over-long requests follows num_ctx: the scan waits for the probe
        prober.join()
        model_info = probes.get("model", (None,))[0]
        params = params.with_server_context(probes.get("server", {}).get("server_slot_ctx"),
                                            training_context(model_info) if model_info else None)
    try:
        summary = validate_only(params.input_path, **input_checks(params))
    except ValueError as exc:  # InputError and impossible limits
        raise SetupError(str(exc)) from None
    finally:
        prober.join()  # bounded by backend.PROBE_TIMEOUT_S per request
    if "host_error" in probes:
        raise SetupError(probes["host_error"])
    server = probes.get("server", {})
    slots = server.get("server_slots")
    if slots and (params.parallel_auto or "parallel" not in params.model_fields_set):
        params = params.model_copy(update={"parallel": min(slots, MAX_PARALLEL)})  # as a run resolves it
    if not summary.accepted:
        raise InputError(no_accepted_rows(summary, rejects=None))
    problem = conversation_problem(summary, params)
    if problem:
        raise SetupError(problem)
    model_info, source, weights, version = probes.get("model", (None, "unknown (probe failed)", None, ""))
    free, gpu_reason = probes.get("gpu", (None, "GPU probe failed"))
    try:
        return build_plan(summary, params, system_prompt=system_prompt, model_info=model_info,
                          model_info_source=source, free_vram_mib=free, gpu_reason=gpu_reason,
                          kv_cache_type=kv_cache_type, prefill_tps=prefill_tps, decode_tps=decode_tps,
                          weights_mib=weights, engine=backend.kv_engine(version), server_version=version,
                          fixed_slots=backend.context_fixed_at_start, **server)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
