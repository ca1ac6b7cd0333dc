"""How a run's `--think` reaches an OpenAI-compatible server, or the one line that says why it cannot.

    --think low | medium | high  -> `reasoning_effort` (a field of OpenAI's Chat Completions API).
        llama-server hands it to the chat template (tools/server/server-common.cpp, "Parse the OAI
        reasoning_effort field"; llama.cpp vendored in llama-cpp-python 0.3.36); refused there when
        `/props` says the template ignores it (`chat_template_caps.supports_reasoning_effort` false).
    --think on | off             -> `chat_template_kwargs: {"enable_thinking": true | false}`.
        llama-server reads it (server-common.cpp, "parse the enable_thinking kwarg";
        tools/server/README.md: `chat_template_kwargs` ... `{"enable_thinking": false}`) and passes
        `enable_thinking` into the template (common/chat.cpp); refused unless `/props` shows a template
        that reads it. A server without llama.cpp's `/props` (vLLM, SGLang, OpenAI) offers no switch
        chunkwise can check, and OpenAI answers 400 to an unknown field: refused.
    no --think                   -> nothing sent: the server's own default.

Nothing is silently dropped: a setting the server cannot honour is a `ThinkError` (exit 2) before the
first request. The trace comes back as `reasoning_content` (`chunkwise.openai.stream`).
"""

from __future__ import annotations

from typing import Any

from chunkwise.backend import ThinkSupport
from chunkwise.errors import ThinkError

SWITCH = ("on", "off")


def think_support(props: dict[str, Any] | None) -> ThinkSupport:
    """What the server's `/props` (None: it has none) says about thinking."""
    if props is None:
        return ThinkSupport(levels=True, note="this server has no llama.cpp /props, so no thinking switch chunkwise "
                                              "can check; levels go as reasoning_effort")
    caps = props.get("chat_template_caps") or {}
    switch = "enable_thinking" in str(props.get("chat_template") or "")
    levels = bool(caps.get("supports_reasoning_effort"))
    return ThinkSupport(switch=switch, levels=levels,
                        note=f"the model's chat template at this llama-server {'reads' if switch else 'never reads'} "
                             f"enable_thinking and {'takes' if levels else 'ignores'} reasoning_effort")


def resolve_think(requested: str | None, support: ThinkSupport, model: str) -> str | None:
    """The run's thinking setting as sent (None: not sent), or `ThinkError` before anything is sent."""
    if requested is None:
        return None
    if requested in SWITCH and not support.switch:
        raise ThinkError(f"--think {requested} with --api openai: {support.note}, so model {model!r} cannot be told "
                         f"to think or not; leave --think out" + ("" if not support.levels else
                                                                    " or use --think low|medium|high"))
    if requested not in SWITCH and not support.levels:
        raise ThinkError(f"--think {requested} with --api openai: {support.note}, so model {model!r} takes no "
                         "thinking levels; leave --think out" + (" or use --think on|off" if support.switch else ""))
    return requested


def think_fields(think: bool | str | None) -> dict[str, Any]:
    """The request fields for a resolved setting (`resolve_think`)."""
    if think is None:
        return {}
    if think in SWITCH:
        return {"chat_template_kwargs": {"enable_thinking": think == "on"}}
    return {"reasoning_effort": think}
