"""The run manifest (`manifest.json`): what a run is, so a resume can prove it continues the same run.

A resume is refused, naming each difference, when the input fingerprint, the api, the model or its digest,
the options, the mode, the system prompt or the answer format differ from the manifest. The server's
version and chunkwise's version are recorded and compared only to warn: an upgrade between two
sessions is legitimate and should not strand a paid-for run.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chunkwise import __version__
from chunkwise.params import RunParams
from chunkwise.run.context import RunContext
from chunkwise.store.files import read_json, write_json_atomic

#: Manifest keys whose change makes earlier answers incomparable with new ones.
BINDING_KEYS = ("input_fingerprint", "api", "model", "model_digest", "options", "mode", "system_prompt_sha256",
                "format", "trim_threshold", "chars_per_token", "chunk_plan", "input_columns")
#: What a manifest written before a key existed means by its absence.
DEFAULTS: dict[str, Any] = {"api": "ollama", "input_columns": {"id_column": None, "prompt_column": None,
                                                               "limit": None}}
#: Keys recorded for the record; a change only warns.
ADVISORY_KEYS = ("server_version", "code_version")
#: Keys an earlier manifest wrote under another name (the server's version was `ollama_version` for
#: every server kind until the backends got one owner); read under either, written under the new one.
OLD_NAMES = {"server_version": "ollama_version"}

MANIFEST_VERSION = 1


def now_iso() -> str:
    # milliseconds: session lengths are summed into the active time that throughput divides by, and a
    # short session measured in whole seconds could count as 0 s
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def build_manifest(ctx: RunContext, *, input_path: str, chunk_plan: dict[str, Any]) -> dict[str, Any]:
    p = ctx.params
    return {
        "manifest_version": MANIFEST_VERSION,
        "run_name": os.path.basename(ctx.run_dir),
        "input_path": input_path,
        "input_fingerprint": ctx.input_fingerprint,
        "api": p.api,
        "model": p.model,
        "model_digest": ctx.model_digest,
        "host": ctx.host,
        "server_version": ctx.server_version,
        "server_is_simulator": ctx.is_simulator,
        "options": ctx.options(),
        "keep_alive": p.keep_alive,
        "mode": p.mode,
        "parallel": p.parallel,
        "system_prompt_sha256": hashlib.sha256(ctx.system_prompt.encode()).hexdigest(),
        "format": p.format,
        "trim_threshold": p.trim_threshold,
        "chars_per_token": ctx.chars_per_token,
        "send_truncate_false": ctx.send_truncate_false,
        "chunk_plan": chunk_plan,
        "input_columns": {"id_column": p.id_column, "prompt_column": p.prompt_column, "limit": p.limit},
        "code_version": __version__,
        "params": p.model_dump(mode="json"),
        "created_at": now_iso(),
        "sessions": [],
    }


def run_identity(params: RunParams, *, input_fingerprint: str, model_digest: str, system_prompt: str,
                 think: bool | str | None) -> str:
    """sha256 hex of what makes a run this run: the input's content and every option that changes the answers
    or the chunks (the manifest's binding keys), and nothing else (not the host, the timeouts, `parallel` in
    independent mode). A run given no name is named after it (`chunkwise.store.layout.content_run_name`): the
    same command on the same input resumes; another model, prompt or option starts a run of its own."""
    p = params
    conversation = p.mode == "conversation"
    material = {
        "input": input_fingerprint, "api": p.api, "model": p.model, "digest": model_digest,
        "options": {"num_ctx": p.num_ctx, "num_predict": p.num_predict, "temperature": p.temperature, "seed": p.seed},
        "mode": p.mode, "system": hashlib.sha256(system_prompt.encode()).hexdigest(), "format": p.format,
        "trim": p.trim_threshold, "chars_per_token": p.chars_per_token, "think": think,
        "chunks": {"size": p.chunk_size, "budget": p.num_ctx if conversation else p.chunk_token_budget,
                   "answer": p.expected_answer_tokens, "parallel": p.parallel if conversation else None},
        "columns": {"id": p.id_column, "prompt": p.prompt_column, "limit": p.limit},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def recorded(manifest: dict[str, Any], key: str) -> Any:
    """`manifest[key]`, under its earlier name (`OLD_NAMES`) or its meaning by absence (`DEFAULTS`)
    for a manifest written before the key existed."""
    if key in manifest:
        return manifest[key]
    old = OLD_NAMES.get(key)
    return manifest[old] if old in manifest else DEFAULTS.get(key)


def upgraded(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its keys under today's names (what a resume writes back)."""
    out = dict(manifest)
    for key, old in OLD_NAMES.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(key, value)
    return out


def differences(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(binding differences that refuse a resume, advisory ones that only warn), each a phrase."""

    def phrase(key: str) -> str:
        return f"{key}: run has {_short(recorded(old, key))}, now {_short(recorded(new, key))}"

    binding = [phrase(k) for k in BINDING_KEYS if recorded(old, k) != recorded(new, k)]
    advisory = [phrase(k) for k in ADVISORY_KEYS if recorded(old, k) != recorded(new, k)]
    return binding, advisory


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def start_session(manifest: dict[str, Any], *, retry_failed: bool) -> dict[str, Any]:
    """Append a session entry (one per start or resume) and return it."""
    session = {"started_at": now_iso(), "ended_at": None, "pid": os.getpid(), "hostname": socket.gethostname(),
               "code_version": __version__, "retry_failed": retry_failed}
    manifest.setdefault("sessions", []).append(session)
    return session


def touch_session(path: Path) -> None:
    """Mark the current session alive until now (so a crashed session's time still counts in the
    run's active time)."""
    manifest = read_json(path)
    if manifest.get("sessions"):
        manifest["sessions"][-1]["ended_at"] = now_iso()
        write_json_atomic(path, manifest)
