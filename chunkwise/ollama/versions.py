"""What the connected Ollama's version and `/api/show` answer mean for the requests chunkwise sends.

Sources (github.com/ollama/ollama, read at tag v0.33.0-rc2 and the tags named):
- `think` defaults to true for thinking-capable models from v0.12.4 (server/routes.go ChatHandler:
  `if req.Think == nil { req.Think = &api.ThinkValue{Value: true} }`, absent at v0.12.3); a truthy
  `think` for a model without the "thinking" capability is a 400 `"m" does not support thinking`.
  Levels are the strings "low" | "medium" | "high" (api/types.go ThinkValue); gpt-oss takes only
  levels and cannot stop thinking (docs/capabilities/thinking.mdx), other models use a level only
  where their template reads `.ThinkLevel` (template/template.go, server/prompt.go).
- `truncate` and `shift` are ChatRequest fields from v0.12.6 (api/types.go; absent at v0.12.5);
  older servers ignore unknown JSON fields, so chunkwise sends both to every server.
- v0.30.0 reported only the uncached prompt tokens in `prompt_eval_count`
  (v0.30.0 llm/llama_server.go `PromptEvalCount: lsResp.Timings.PromptN`); v0.30.1 counts the
  cached ones too (commit 35fa277, PR #16428). chunkwise refuses 0.30.0: every prefix-cache hit
  would look like a truncated prompt.
- A source build reports version 0.0.0 (version/version.go); nothing here depends on the
  version being known.
"""

from __future__ import annotations

from typing import Any

from chunkwise.errors import SetupError

#: The one release whose prompt_eval_count leaves out cached tokens.
UNCACHED_COUNT_VERSION = "0.30.0"
#: Model families that take only think levels (docs/capabilities/thinking.mdx).
LEVEL_ONLY_FAMILIES = frozenset({"gptoss"})


class ThinkError(SetupError):
    """`think` asked of a model that cannot do it; the message says what to do (exit 2)."""


def refuse_version(version: str) -> str | None:
    """A one-line reason to refuse this server version, or None."""
    if version.strip().lstrip("v").split("-")[0] == UNCACHED_COUNT_VERSION:
        return (
            "Ollama 0.30.0 reports only the uncached part of each prompt in prompt_eval_count, so chunkwise "
            "cannot tell a prefix-cache hit from a truncated prompt; upgrade Ollama to 0.30.1 or later"
        )
    return None


def _families(show: dict[str, Any]) -> set[str]:
    details = show.get("details") or {}
    return {str(f) for f in [details.get("family"), *(details.get("families") or [])] if f}


def can_think(show: dict[str, Any]) -> bool:
    return "thinking" in (show.get("capabilities") or [])


def level_only(show: dict[str, Any]) -> bool:
    return bool(_families(show) & LEVEL_ONLY_FAMILIES)


def takes_levels(show: dict[str, Any]) -> bool:
    return level_only(show) or "ThinkLevel" in str(show.get("template") or "")


def resolve_think(requested: str | None, show: dict[str, Any], model: str) -> bool | str | None:
    """The `think` value to send (None: leave the field out), or `ThinkError` before anything is sent.

    `requested` is the run's `think` parameter: None (the default), "off", "on" or a level.
    """
    if not can_think(show):
        if requested in (None, "off"):
            return None
        capabilities = ", ".join(show.get("capabilities") or []) or "none reported"
        raise ThinkError(
            f"--think {requested}: model {model!r} cannot think (its /api/show capabilities: {capabilities}); "
            "leave --think out or choose a thinking model"
        )
    if requested is None:
        return "low" if level_only(show) else False
    if requested == "off":
        if level_only(show):
            raise ThinkError(
                f"--think off: {model!r} cannot stop thinking (gpt-oss takes only levels); use --think low"
            )
        return False
    if requested == "on":
        return "medium" if level_only(show) else True
    if not takes_levels(show):
        raise ThinkError(f"--think {requested}: {model!r} takes no thinking levels; use --think on or --think off")
    return requested


def model_digest(tags: list[dict[str, Any]], model: str) -> str:
    """The model's digest from `/api/tags`, matching untagged names as Ollama does
    (`llama3.1` means `llama3.1:latest`, types/model/name.go) and the default registry prefix."""
    name = model.strip()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/"):
        name = name.removeprefix(prefix)
    candidates = {name}
    if ":" not in name.rsplit("/", 1)[-1]:
        candidates.add(f"{name}:latest")
    for entry in tags:
        if entry.get("name") in candidates or entry.get("model") in candidates:
            return str(entry.get("digest") or "")
    return ""
