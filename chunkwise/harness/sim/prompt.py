"""Prompt rendering and Ollama's two truncation stages (research ollama.md section 2).

Rendering is `chunkwise.harness.sim.templates.render_chat` for the model's template family, applied one
message at a time so each message's tokens can be cached (a batch repeats the same system prompt; a
conversation repeats its history). The BOS token, where the family has one, is a segment of its own.
`render_chat(messages, template=t)` and `render_messages(messages, template=t)` give the same tokens (tested).

Stage 1 (chat only, when `truncate` is true): drop whole older messages from the front until the
prompt fits num_ctx, never dropping system messages (they move to the front) nor the last message
(`v0.20.0:server/prompt.go` chatPrompt).

Stage 2 (every prompt still too long), by `SimOptions.truncation_mode` (the era's by default, era.py):
  keep-tail  Ollama 0.4-0.29: keep the first `keep` tokens and the last `num_ctx - keep`; the prompt
             becomes exactly num_ctx tokens (`v0.20.0:runner/llamarunner/runner.go:133-154`).
  minus-one  Ollama 0.30.0-0.30.10: the same cut to num_ctx - 1 tokens (`v0.30.0:llm/llama_server.go:277-294`).
  half       Ollama >= 0.30.11: the limit is `num_ctx - max((num_ctx - keep) // 2, 1)`, e.g. 2050 of
             4096 (keep 4) or 16387 of 32768 (keep 5) (`HEAD:llm/llama_server.go:279-331`).
  error      HTTP 400, as llama-server-native models answer.
`keep` is options.num_keep (default 4; negative = the whole prompt) plus 1 when the model's tokenizer
adds a BOS token (the llama.cpp runner's rule, `v0.24.0:runner/llamarunner/runner.go:137-139`), at
most num_ctx - 1. The token lists start with the BOS token, so the counts match
`templates.chat_prompt_tokens` exactly when nothing is cut.
"truncate": false turns any over-length prompt into the 400. A prompt "fits" when it has at most
num_ctx tokens (num_ctx - 1 in `half` mode, where Ollama cuts anything above num_ctx - 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from chunkwise.harness.sim.templates import LLAMA3, TEMPLATES, ChatTemplate
from chunkwise.harness.sim.tokenizer import tokenize

INPUT_TOO_LONG = "the input length exceeds the context length"
#: Token tuples a token list starts with, in order (the cached tuples of `message_tokens`).
Segments = tuple[tuple[str, ...], ...]


class PromptTooLong(Exception):
    """An over-length prompt that must be answered 400 (`INPUT_TOO_LONG`, or llama-server's refusal:
    `refusal_text`). `tokens`: the prompt's length in tokens."""

    def __init__(self, tokens: int) -> None:
        super().__init__(INPUT_TOO_LONG)
        self.tokens = tokens


def refusal_text(tokens: int, num_ctx: int, llama_server: bool) -> str:
    """The 400 message for a prompt of `tokens` that `truncate: false` keeps from being cut. The Go runners
    say INPUT_TOO_LONG; from 0.30 llama-server refuses it and Ollama passes its JSON error body on as the
    message (`era.py`, llama_server)."""
    if not llama_server:
        return INPUT_TOO_LONG
    return json.dumps({"error": {"code": 400, "message": f"request ({tokens} tokens) exceeds the available context "
                                 f"size ({num_ctx} tokens), try increasing it", "type": "exceed_context_size_error",
                                 "n_prompt_tokens": tokens, "n_ctx": num_ctx}}, separators=(",", ":"))


@lru_cache(maxsize=2048)  # ~50 KB per 700-token message: <= ~100 MB; 8 conversations of 111 turns fit
def message_tokens(role: str, content: str, density: float = 1.0, template: str = "llama3") -> tuple[str, ...]:
    """The rendered tokens of one message (template tokens included), cached."""
    return tuple(TEMPLATES[template].message(role, tokenize(content, density)))


@lru_cache(maxsize=8)
def bos_segment(template: str) -> tuple[str, ...]:
    """The BOS token as a segment (one object per family, so prompts share it by identity)."""
    bos = TEMPLATES[template].bos
    return (bos,) if bos else ()


def _message_key(message: Mapping[str, Any]) -> tuple[str, str]:
    return str(message.get("role", "user")), str(message.get("content") or "")


def message_segments(messages: Sequence[Mapping[str, Any]], density: float = 1.0,
                     template: ChatTemplate = LLAMA3) -> Segments:
    """The BOS segment (if any), then the cached token tuple of each message, in order."""
    head = bos_segment(template.name)
    return ((head,) if head else ()) + tuple(
        [message_tokens(*_message_key(message), density, template.name) for message in messages])


def join_segments(segments: Segments, template: ChatTemplate = LLAMA3) -> list[str]:
    """The prompt tokens: the segments, then the generation prompt."""
    out: list[str] = []
    for segment in segments:
        out += segment
    out += template.generation
    return out


def render_messages(messages: Sequence[Mapping[str, Any]], density: float = 1.0,
                    template: ChatTemplate = LLAMA3) -> list[str]:
    """Same tokens as `render_chat(messages, density, template)`, built from cached per-message tokens."""
    return join_segments(message_segments(messages, density, template), template)


@dataclass
class Prompt:
    tokens: list[str]
    #: Tokens of the rendered prompt before any truncation.
    rendered_tokens: int
    dropped_messages: int = 0
    cut_tokens: int = 0
    #: The token tuples `tokens` starts with (a shortcut for the slots' prefix comparison); () when unknown.
    segments: Segments = ()


def prune_messages(
    messages: Sequence[Mapping[str, Any]], num_ctx: int, density: float = 1.0, template: ChatTemplate = LLAMA3
) -> tuple[list[Mapping[str, Any]], int]:
    """Stage 1: the messages that remain and how many were dropped."""
    keys = [_message_key(m) for m in messages]
    lengths = [len(message_tokens(*k, density, template.name)) for k in keys]
    total = len(template.generation) + len(bos_segment(template.name)) + sum(lengths)
    if total <= num_ctx or len(messages) <= 1:
        return list(messages), 0
    last = len(messages) - 1
    suffix = total
    system_before = 0
    start = last
    for i in range(len(messages)):
        if i > 0:
            suffix -= lengths[i - 1]
            if keys[i - 1][0] == "system":
                system_before += lengths[i - 1]
        if system_before + suffix <= num_ctx:
            start = i
            break
    kept = [messages[j] for j in range(start) if keys[j][0] == "system"] + list(messages[start:])
    return kept, len(messages) - len(kept)


def cut_tokens(tokens: list[str], num_ctx: int, num_keep: int, adds_bos: bool, mode: str, truncate: bool) -> list[str]:
    """Stage 2: the tokens the model evaluates, or PromptTooLong."""
    n = len(tokens)
    fits = num_ctx - 1 if mode in ("half", "minus-one") else num_ctx
    if n <= fits:
        return tokens
    if not truncate or mode == "error":
        raise PromptTooLong(n)
    keep = n if num_keep < 0 else num_keep
    keep = max(0, min(keep + (1 if adds_bos else 0), num_ctx - 1))
    if mode == "keep-tail":
        new_len = num_ctx
    elif mode == "minus-one":
        new_len = num_ctx - 1
    else:
        new_len = num_ctx - max((num_ctx - keep) // 2, 1)
    return tokens[:keep] + tokens[keep + n - new_len :]


def chat_prompt(messages: Sequence[Mapping[str, Any]], num_ctx: int, num_keep: int, adds_bos: bool, mode: str,
                truncate: bool, density: float = 1.0, template: ChatTemplate = LLAMA3) -> Prompt:
    """Render and truncate an /api/chat prompt."""
    dropped = 0
    if truncate:
        messages, dropped = prune_messages(messages, num_ctx, density, template)
    segments = message_segments(messages, density, template)
    rendered_tokens = join_segments(segments, template)
    rendered = len(rendered_tokens)
    tokens = cut_tokens(rendered_tokens, num_ctx, num_keep, adds_bos, mode, truncate)
    return Prompt(tokens, rendered, dropped, rendered - len(tokens), segments if tokens is rendered_tokens else ())


def generate_messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    """/api/generate's prompt as chat messages: [system (if given), user prompt]."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages


def generate_prompt(prompt: str, system: str | None, raw: bool, num_ctx: int, num_keep: int, adds_bos: bool,
                    mode: str, truncate: bool, density: float = 1.0, template: ChatTemplate = LLAMA3) -> Prompt:
    """Render and truncate an /api/generate prompt (`raw` skips the template but not BOS, as in Ollama)."""
    segments = () if raw else message_segments(generate_messages(prompt, system), density, template)
    bos = list(bos_segment(template.name))
    rendered_tokens = bos + tokenize(prompt, density) if raw else join_segments(segments, template)
    rendered = len(rendered_tokens)
    tokens = cut_tokens(rendered_tokens, num_ctx, num_keep, adds_bos, mode, truncate)
    return Prompt(tokens, rendered, 0, rendered - len(tokens), segments if tokens is rendered_tokens else ())
