"""The one rule by which chunkwise matches a model name against Ollama's lists (`/api/tags`, `/api/ps`):
Ollama's own (github.com/ollama/ollama `types/model/name.go`).

A name is `[host/][namespace/]model[:tag][+build][@digest]`; `ParseName` fills the missing parts with
`registry.ollama.ai/library/?:latest`, and names compare case-insensitively (`Name.EqualFold`). The lists
show `DisplayShortest()`, which drops the default host, namespace and tag again. So `llama3.1`,
`llama3.1:latest`, `Llama3.1` and `registry.ollama.ai/library/llama3.1:latest` are one model, and
`hf.co/user/repo:q4` stays itself. The build and digest parts do not take part in the match (the lists
carry neither in the name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"


def model_key(name: object) -> tuple[str, str, str, str]:
    """(host, namespace, model, tag) of `name`, defaults filled and lowercased, as Ollama compares names."""
    text = str(name or "").strip()
    for scheme in ("http://", "https://"):
        text = text.removeprefix(scheme)
    text = text.split("@", 1)[0].split("+", 1)[0]
    path, tag = text, DEFAULT_TAG
    if ":" in text.rsplit("/", 1)[-1]:
        path, tag = text.rsplit(":", 1)
    parts = path.split("/")
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = "/".join(parts[:-2]) if len(parts) >= 3 else DEFAULT_HOST
    return host.lower(), namespace.lower(), model.lower(), (tag or DEFAULT_TAG).lower()


def same_model(a: object, b: object) -> bool:
    """Whether two names mean one model to Ollama."""
    return bool(str(a or "").strip()) and model_key(a) == model_key(b)


def find_model(entries: Iterable[Mapping[str, Any]] | None, model: str) -> dict[str, Any] | None:
    """The first list entry (`/api/tags` or `/api/ps`) whose `name` or `model` is `model`, or None."""
    for entry in entries or ():
        if same_model(entry.get("name"), model) or same_model(entry.get("model"), model):
            return dict(entry)
    return None


def model_digest(tags: Iterable[Mapping[str, Any]] | None, model: str) -> str:
    """The digest `/api/tags` lists for `model`, or "" when it lists no such model."""
    entry = find_model(tags, model)
    return str(entry.get("digest") or "") if entry else ""
