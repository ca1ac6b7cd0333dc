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

from chunkwise.backend import ThinkSupport
from chunkwise.errors import ThinkError
from chunkwise.ollama.compute import version_tuple

#: First release that honours `truncate: false` (refuses an over-long prompt instead of cutting it).
TRUNCATE_SINCE = (0, 12, 6)
#: The one release whose prompt_eval_count leaves out cached tokens.
UNCACHED_COUNT_VERSION = "0.30.0"
#: Model families that take only think levels (docs/capabilities/thinking.mdx).
LEVEL_ONLY_FAMILIES = frozenset({"gptoss"})


def refuse_version(version: str) -> str | None:
    """A one-line reason to refuse this server version, or None."""
    if version.strip().lstrip("v").split("-")[0] == UNCACHED_COUNT_VERSION:
        return (
            "Ollama 0.30.0 reports only the uncached part of each prompt in prompt_eval_count, so chunkwise "
            "cannot tell a prefix-cache hit from a truncated prompt; upgrade Ollama to 0.30.1 or later"
        )
    return None


def cuts_prompts(version: str) -> bool:
    """Whether this Ollama may cut an over-long prompt although chunkwise sends `truncate: false`:
    releases before 0.12.6 ignore the field. A source build (0.0.0) is assumed current."""
    v = version_tuple(version)
    return v != (0, 0, 0) and v < TRUNCATE_SINCE


def _families(show: dict[str, Any]) -> set[str]:
    details = show.get("details") or {}
    return {str(f) for f in [details.get("family"), *(details.get("families") or [])] if f}


def think_support(show: dict[str, Any]) -> ThinkSupport:
    """What `/api/show` says about the model's thinking: the "thinking" capability; levels only for the
    families that take nothing else (gpt-oss), or where the template reads `.ThinkLevel`."""
    capabilities = show.get("capabilities") or []
    can = "thinking" in capabilities
    level_only = bool(_families(show) & LEVEL_ONLY_FAMILIES)
    return ThinkSupport(can_think=can, switch=can and not level_only,
                        levels=can and (level_only or "ThinkLevel" in str(show.get("template") or "")),
                        levels_only=can and level_only,
                        note=f"its /api/show capabilities: {', '.join(capabilities) or 'none reported'}")


def resolve_think(requested: str | None, support: ThinkSupport, model: str) -> bool | str | None:
    """The `think` value to send (None: leave the field out), or `ThinkError` before anything is sent.

    `requested` is the run's `think` parameter: None (the default), "off", "on" or a level.
    """
    if not support.can_think:
        if requested in (None, "off"):
            return None
        raise ThinkError(
            f"--think {requested}: model {model!r} cannot think ({support.note}); "
            "leave --think out or choose a thinking model"
        )
    if requested is None:
        return "low" if support.levels_only else False
    if requested == "off":
        if support.levels_only:
            raise ThinkError(
                f"--think off: {model!r} cannot stop thinking (gpt-oss takes only levels); use --think low"
            )
        return False
    if requested == "on":
        return "medium" if support.levels_only else True
    if not support.levels:
        raise ThinkError(f"--think {requested}: {model!r} takes no thinking levels; use --think on or --think off")
    return requested
