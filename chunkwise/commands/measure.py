"""`chunkwise measure`: measure GPU memory against num_ctx on an Ollama host (see chunkwise.measure.run).

Run it on the machine that runs Ollama: the GPU sampler measures the machine it runs on. Without
an NVIDIA GPU/driver here it still works, reading Ollama's /api/ps instead. Heavy imports (httpx,
matplotlib, prefect) happen in `run`, so `chunkwise --help` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from chunkwise.errors import EXIT_FAILED, EXIT_OK, SetupError
from chunkwise.measure.fit import DEFAULT_CONTEXTS

#: --local-engine default contexts per slot (tokens); chunkwise.measure.engine.DEFAULT_ENGINE_CONTEXTS,
#: repeated here so `chunkwise --help` does not import httpx.
DEFAULT_ENGINE_CONTEXTS = (2048, 4096, 8192, 16384)

NAME = "measure"
HELP = ("Measure what a context token costs in GPU memory: load the model at each num_ctx, fit memory "
        "against num_ctx, compare with the KV formula and recommend the largest safe num_ctx.")


def parse_contexts(text: str) -> list[int]:
    """`1000,5000,10000` -> [1000, 5000, 10000]; ValueError with a one-line message otherwise."""
    out = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--contexts: {part!r} is not a positive whole number of tokens; "
                             "write e.g. --contexts 1000,5000,10000")
        out.append(int(part))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from chunkwise.commands.flags import add_alias

    parser.add_argument("--local-engine", action="store_true",
                        help="instead of an Ollama at --host, start the local llama-server of `make engine` once per "
                        "context (its context is fixed at start) and read its RSS, or NVML with a GPU (default: off)")
    add_alias(parser, "--api", "--local-engine", "local_engine", choices=("ollama", "openai"),
              convert=lambda value: value == "openai", note=" (for --api openai)")
    parser.add_argument("--model", metavar="NAME",
                        help="Ollama model name, e.g. llama3.1:8b (required without --local-engine); with "
                        "--local-engine a GGUF file (default: the Gemma 3 270M of `make engine`)")
    parser.add_argument("--engine-args", default="", metavar="FLAGS",
                        help="--local-engine: more llama-server flags, one string, e.g. \"-ngl 999\" on a GPU")
    parser.add_argument("--prompt-tokens", type=int, default=None, metavar="N",
                        help="--local-engine: prompt size sent after each start, tokens (default: nearly the slot's "
                        "context; the reservation at load does not depend on it)")
    parser.add_argument("--contexts", default=None, metavar="N,N,...",
                        help="comma-separated num_ctx values to load, tokens per slot (default: "
                        f"{','.join(map(str, DEFAULT_CONTEXTS))}; with --local-engine "
                        f"{','.join(map(str, DEFAULT_ENGINE_CONTEXTS))})")
    parser.add_argument("--host", default=None, metavar="URL",
                        help="the Ollama's base URL (default: CHUNKWISE_OLLAMA_HOST, OLLAMA_HOST, "
                        "http://127.0.0.1:11434)")
    parser.add_argument("--output-dir", default=None, type=Path,
                        help="directory under which measure-<model>-<time>/ is written (default: runs)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="the server's OLLAMA_NUM_PARALLEL; the formula is KV per token x this (default: 1)")
    parser.add_argument("--num-predict", type=int, default=32, help="tokens generated per request (default: 32)")
    parser.add_argument("--kv-cache-type", choices=("f16", "q8_0", "q4_0"), default="f16",
                        help="the server's OLLAMA_KV_CACHE_TYPE, for the formula (default: f16)")
    parser.add_argument("--vram-mib", type=float, default=None,
                        help="GPU memory the model may use on the Ollama host, MiB; needed for a "
                        "recommendation when NVML cannot see that GPU")
    parser.add_argument("--prefect", action="store_true",
                        help="run as the Prefect flow flows.measure.measure_flow (a markdown artifact)")


def _summary(report: dict[str, Any]) -> str:
    lines = [f"memory source: {report['vram_source_text']}"]
    if report["slope_mib_per_token"] is not None:
        lines.append(f"measured: {report['slope_mib_per_token']:.6f} MiB per context token "
                     f"(intercept {report['intercept_mib']:.1f} MiB)")
    else:
        lines.append("measured: no fit (fewer than two usable contexts)")
    if report["formula_mib_per_token"] is not None:
        rel = report["relative_difference"]
        lines.append(f"KV formula x {report['parallel']}: {report['formula_mib_per_token']:.6f} MiB per token"
                     + ("" if rel is None else f" (measured - formula: {rel:+.2%})"))
    if report.get("predicted_mib_per_token") is not None:
        rel = report["predicted_relative_difference"]
        lines.append(f"predicted with the attention mask (num_batch {report['batch']}): "
                     f"{report['predicted_mib_per_token']:.6f} MiB per token"
                     + ("" if rel is None else f" (measured - predicted: {rel:+.2%})"))
    rec = report["recommendation"]
    lines.append(f"recommended num_ctx: {rec['num_ctx']} ({rec['note']})" if rec["num_ctx"]
                 else f"recommended num_ctx: none ({rec['note']})")
    cut = [r["num_ctx"] for r in report["rows"] if r["truncated"]]
    failed = [r["num_ctx"] for r in report["rows"] if r["status"] == "failed"]
    if cut:
        lines.append(f"TRUNCATED prompts at num_ctx {', '.join(map(str, cut))}: see the table")
    if failed:
        lines.append(f"FAILED contexts: {', '.join(map(str, failed))}: see the table")
    lines += [f"written: {report['md_path']}, {report['csv_path']}, {report['png_path']}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from chunkwise.servers import backend_for

    # the local engine is a llama-server: the OpenAI-compatible backend
    backend = backend_for("openai" if args.local_engine else "ollama")
    # A server that fixes its context at start (llama-server) is measured by restarting the local engine per
    # context; one that loads the model per request (Ollama) by a request per context.
    restarts = backend.context_fixed_at_start
    try:
        contexts = parse_contexts(args.contexts or ",".join(map(str, DEFAULT_ENGINE_CONTEXTS if restarts
                                                                 else DEFAULT_CONTEXTS)))
        if args.parallel < 1 or args.num_predict < 1:
            raise ValueError("--parallel and --num-predict must be >= 1")
        if not restarts and not args.model:
            raise ValueError("--model is required without --local-engine (an Ollama model name, e.g. llama3.1:8b)")
        if restarts and (args.host or args.prefect):
            raise ValueError("--local-engine starts its own llama-server per context on this machine; --host and "
                             "--prefect are for an Ollama")
        if restarts and any(c < 256 for c in contexts):
            raise ValueError("--contexts: llama-server needs at least 256 tokens per slot")
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    if restarts:
        return _run_engine(args, contexts)
    from contextlib import closing

    from chunkwise.errors import LLMError
    from chunkwise.settings import get_settings

    settings = get_settings()
    output_dir = args.output_dir or settings.output_dir
    try:
        if args.prefect:
            from flows.measure import measure_flow

            report = measure_flow(model=args.model, contexts=contexts, host=args.host, output_dir=str(output_dir),
                                  parallel=args.parallel, num_predict=args.num_predict,
                                  kv_cache_type=args.kv_cache_type, vram_mib=args.vram_mib)
        else:
            from chunkwise.measure.run import measure_run_dir, run_measurement

            host = backend.resolve_host(args.host, settings)
            with closing(backend.client(host, settings, connect_timeout_s=settings.connect_timeout_s,
                                        read_timeout_s=settings.read_timeout_s)) as client:
                report = run_measurement(client, args.model, contexts, measure_run_dir(output_dir, args.model),
                                         parallel=args.parallel, num_predict=args.num_predict,
                                         kv_cache_type=args.kv_cache_type, vram_mib=args.vram_mib,
                                         backend=backend).as_dict()
    except LLMError as exc:  # unreachable, model not found: nothing could be measured
        raise SetupError(str(exc)) from None
    return _finish(report)


def _finish(report: dict[str, Any]) -> int:
    """Print the summary; exit 0 only when every context was measured, none cut, and a line fitted."""
    print(_summary(report))
    ok = report["slope_mib_per_token"] is not None and not any(
        r["truncated"] or r["status"] == "failed" for r in report["rows"])
    return EXIT_OK if ok else EXIT_FAILED


def _run_engine(args: argparse.Namespace, contexts: list[int]) -> int:
    """`--local-engine`: chunkwise.measure.engine.run_engine_measurement on the local llama-server."""
    from chunkwise.measure.engine import run_engine_measurement
    from chunkwise.measure.run import measure_run_dir
    from chunkwise.settings import get_settings

    model = Path(args.model) if args.model else None
    settings = get_settings()
    output_dir = args.output_dir or settings.output_dir
    try:
        report = run_engine_measurement(
            contexts, measure_run_dir(output_dir, model.stem if model else "gemma3-270m"), model=model,
            parallel=args.parallel, num_predict=args.num_predict, prompt_tokens=args.prompt_tokens,
            kv_cache_type=args.kv_cache_type, sample_interval_s=settings.gpu_sample_interval_s,
            extra=shlex.split(args.engine_args)).as_dict()
    except ValueError as exc:  # EngineStartError and GGUFError are SetupErrors: the CLI prints them
        if isinstance(exc, SetupError):
            raise
        raise SetupError(str(exc)) from None
    return _finish(report)
