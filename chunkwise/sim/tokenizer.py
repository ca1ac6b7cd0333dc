"""The deterministic tokenizer shared by the Ollama simulator and by tests.

It is not a real model's BPE. It exists so that the simulator counts tokens the same way on every
machine and tests can compute exact expectations (`prompt_eval_count`, truncation points).

Rule, applied left to right by one regular expression, first alternative that matches wins:

1. an optional single space followed by 1 to 4 letters or digits (`" word"` -> `" word"`,
   `"tokenizer"` -> `"toke" "nize" "r"`);
2. an optional single space followed by one character that is neither a letter, a digit nor
   whitespace (punctuation, symbols, `_`);
3. a run of whitespace not consumed by rules 1-2 (newlines, double spaces).

Every character belongs to exactly one token, so `"".join(tokenize(s)) == s`. English prose comes
out at about 3.5-4 characters per token, close to real BPE vocabularies, which keeps the context
arithmetic of the demo and benchmarks realistic.

Chat prompts are rendered by `render_chat`: each message costs `MESSAGE_OVERHEAD_TOKENS` template
tokens (start marker, role, newline, end marker) plus its content, and the prompt ends with
`GENERATION_PROMPT_TOKENS` tokens that open the assistant's turn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

TOKEN_RE = re.compile(r" ?[^\W_]{1,4}| ?[^\w\s]| ?_|\s+")

#: Template tokens per chat message: `<|start|>`, the role, a newline, `<|end|>`.
MESSAGE_OVERHEAD_TOKENS = 4
#: Tokens that open the assistant's turn at the end of a rendered chat prompt.
GENERATION_PROMPT_TOKENS = 3


def tokenize(text: str) -> list[str]:
    """Split `text` into tokens (see the module docstring for the rule)."""
    return TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens in `text`."""
    return len(TOKEN_RE.findall(text))


def render_chat(messages: Iterable[Mapping[str, str]]) -> list[str]:
    """The token sequence of a chat prompt, template tokens included.

    Each message becomes `["<|start|>", role, "\\n", *tokenize(content), "<|end|>"]`; the prompt
    ends with `["<|start|>", "assistant", "\\n"]`.
    """
    out: list[str] = []
    for message in messages:
        out.append("<|start|>")
        out.append(str(message.get("role", "user")))
        out.append("\n")
        out.extend(tokenize(str(message.get("content") or "")))
        out.append("<|end|>")
    out.extend(("<|start|>", "assistant", "\n"))
    return out


def chat_prompt_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """Length of `render_chat(messages)` without building the list."""
    total = GENERATION_PROMPT_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + count_tokens(str(message.get("content") or ""))
    return total
