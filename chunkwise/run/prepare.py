"""Everything that happens before the first request: resolve and check the configuration, ask the
server what it is and whether it can honour the run (the run's backend, `chunkwise.servers`), create
or re-open the run directory and stage the input (`chunkwise.run.rundir`), and plan the chunks.

Each check fails with a `SetupError` (`chunkwise.errors`: an `InputError`, `RunLocked`,
`UnsafePathError` or `ConfigError` is one), a one-line message naming what is wrong and what to do;
the CLI turns it into exit code 2. Nothing is sent to the model until all of them pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkwise.errors import InputError, SetupError
from chunkwise.inputs import stage as staging
from chunkwise.inputs.checks import conversation_problem, no_accepted_rows, with_file_model
from chunkwise.logs import RunLogger, logger
from chunkwise.params import RunParams
from chunkwise.plan import chunks as planning
from chunkwise.run import density
from chunkwise.run.context import RunContext
from chunkwise.run.manifest import build_manifest, differences, run_identity, start_session, upgraded
from chunkwise.run.parallel import resolve_parallel
from chunkwise.run.rundir import (
    discard_empty_run_dir,
    discard_new_run_dir,
    next_free_name,
    open_run_dir,
    remove_temp_files,
    stage_or_reuse,
)
from chunkwise.servers import backend_for
from chunkwise.settings import get_settings
from chunkwise.store import confine
from chunkwise.store import lock as runlock
from chunkwise.store.files import apply_umask, write_json_atomic
from chunkwise.store.layout import RunPaths


def log() -> RunLogger:
    return logger("chunkwise.run.prepare")


@dataclass
class PreparedRun:
    """A checked configuration, a staged input and the run's earlier manifest (None for a new run)."""

    ctx: RunContext
    staged: staging.StagedInput
    existing_manifest: dict[str, Any] | None
    #: The server's model_info (architecture numbers for the KV formula; {} when it has none).
    model_info: dict[str, Any]


def resolve_system_prompt(params: RunParams) -> str:
    if not params.system_prompt_file:
        return params.system_prompt
    path = Path(params.system_prompt_file)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SetupError(f"system prompt file {path} does not exist; check --system-prompt-file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"system prompt file {path} cannot be read as UTF-8 text ({exc}); fix the file") from None


def prepare_run(params: RunParams) -> PreparedRun:
    settings = get_settings()
    # first, before any file is read or written: the paths stay inside their roots, files are private
    confine.check_run(params.output_dir, {"input_path": params.input_path,
                                          "system_prompt_file": params.system_prompt_file},
                      runs_root=settings.runs_root_path(), inputs_root=settings.inputs_root_path())
    apply_umask()
    system_prompt = resolve_system_prompt(params)
    params = with_file_model(params)  # a batch file names its model on every line
    backend = backend_for(params.api)
    host = backend.resolve_host(params.host, settings)
    with closing(backend.client(host, settings, connect_timeout_s=min(settings.connect_timeout_s, 10.0),
                                read_timeout_s=60.0)) as client:
        facts = backend.inspect(client, params.model)  # unreachable, model missing: SetupError
    params = params.with_server_context(facts.slot_ctx, facts.training_ctx)  # the default num_ctx fits the server
    params, note, warn = resolve_parallel(params, facts)  # --parallel auto or left out; a number vs the slots
    if note:
        (log().warning if warn else log().info)(note)
    think = backend.check(params, facts)  # an option this server cannot honour: SetupError
    if facts.is_simulator:
        log().warning("the server at %s is chunkwise's Ollama simulator, not a real Ollama", host)

    identity = None
    if not params.run_name:  # named after its input's content and its options: the same command resumes
        source = Path(params.input_path)
        if not source.is_file():
            raise InputError(f"{source}: no such file; check the input path" if not source.exists() else
                             f"{source}: is a directory, not a file; give the path of one Parquet or .jsonl file")
        identity = run_identity(params, input_fingerprint=staging.fingerprint(source), model_digest=facts.digest,
                                system_prompt=system_prompt, think=think)
    paths, existing = open_run_dir(params, identity)
    if existing is not None and params.new_run:
        params = params.model_copy(update={"run_name": next_free_name(paths), "new_run": False})
        paths, existing = open_run_dir(params)

    runlock.acquire(paths.root)
    remove_temp_files(paths.root)
    try:
        staged = stage_or_reuse(params, paths, existing)
    except InputError:
        if existing is None:
            discard_empty_run_dir(paths.root)
        raise
    problem = conversation_problem(staged, params)
    if problem:
        if existing is None:
            discard_new_run_dir(paths.root)
        raise SetupError(problem)

    ctx = RunContext(
        run_dir=str(paths.root),
        params=params.model_copy(update={"run_name": paths.root.name}),
        host=host,
        system_prompt=system_prompt,
        input_fingerprint=staged.fingerprint,
        model_digest=facts.digest,
        server_version=facts.version,
        is_simulator=facts.is_simulator,
        send_truncate_false=facts.truncate_switch,
        think=think,
        cuts_prompts=facts.cuts_prompts,
        chars_per_token=params.chars_per_token,
    )
    return PreparedRun(ctx=ctx, staged=staged, existing_manifest=existing, model_info=architecture(facts.model_info))


def architecture(model_info: Mapping[str, Any]) -> dict[str, Any]:
    """`model_info` without the tokenizer's arrays: a verbose /api/show carries the whole vocabulary (tokens,
    scores and types: 3 x 128,256 entries for Llama 3), which nothing here reads, and Prefect walks every
    element of a task's parameters before the task starts (seconds for `plan_chunks(prepared)` alone)."""
    return {k: v for k, v in model_info.items() if not k.startswith("tokenizer.ggml.")}


def plan_run(prepared: PreparedRun, *, write: bool = True) -> tuple[list[planning.ChunkSpec], dict[str, Any]]:
    """Size and cut the chunks, then write the manifest (refusing a resume that changes the run).

    With `write=False` only the checks run (the CLI's preflight).
    """
    ctx, staged, existing = prepared.ctx, prepared.staged, prepared.existing_manifest
    params = ctx.params
    if not staged.accepted:  # every row quarantined: nothing to send, nothing to chunk
        raise InputError(no_accepted_rows(staged, rejects=str(RunPaths(ctx.dir).rejects)))
    # conversation mode: the server's count of a sample of the rows, not the configured ratio (chunkwise.run.density)
    sizing = density.sizing_for(ctx, staged, existing)
    try:
        chunk_size, computed = planning.chunk_size_for(
            staged, params, system_prompt=ctx.system_prompt,
            chars_per_token=sizing["chars_per_token"] if sizing else ctx.chars_per_token)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    # conversation mode's taper (`planning.tail_sizes`); a run planned before it existed resumes without it
    taper = bool((existing.get("chunk_plan") or {}).get("taper")) if existing is not None else \
        params.mode == "conversation"
    multiple = planning.chunk_multiple(params)
    specs = planning.plan_chunks(staged.accepted, chunk_size, rows=staged.accepted_rows, multiple_of=multiple,
                                 taper=taper)
    plan: dict[str, Any] = {"chunk_size": chunk_size, "computed": computed, "chunks": len(specs),
                            "requests": staged.accepted}
    if sizing:  # absent otherwise, so a run planned without a count resumes with the same plan
        plan["sizing"] = sizing
    if taper and planning.tail_sizes(staged.accepted, chunk_size, multiple):  # absent without a tail, as sizing
        plan["taper"] = True
    manifest = build_manifest(ctx, input_path=os.path.abspath(params.input_path), chunk_plan=plan)
    if existing is not None:
        binding, advisory = differences(existing, manifest)
        if binding:
            raise SetupError(
                f"run {ctx.dir.name} was started with different settings ({'; '.join(binding)}); resume with the "
                "same settings, or pass --new-run to start a fresh run beside it"
            )
        for note in advisory:
            log().warning("resuming %s with a change: %s", ctx.dir.name, note)
        manifest = {**upgraded(existing), "server_version": manifest["server_version"],
                    "code_version": manifest["code_version"]}
    if write:
        record_session(ctx, manifest)
    return specs, manifest


def record_session(ctx: RunContext, manifest: dict[str, Any]) -> None:
    """Append this session (a start or a resume) to `manifest` and write it, before the session's first
    request: a ledger line is charged to the session that started before it (`chunkwise.results.sessions`)."""
    start_session(manifest, retry_failed=ctx.params.retry_failed)
    write_json_atomic(RunPaths(ctx.dir).manifest, manifest)
