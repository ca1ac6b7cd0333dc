"""The simulator's own tokenizer and chat template (the client must not import them).

It is not a real model's BPE. It exists so that the simulator counts tokens the same way on every
machine and simulator tests can compute exact expectations (`prompt_eval_count`, truncation points).

Base rule, applied left to right by one regular expression, first alternative that matches wins:

1. an optional single space followed by 1 or 2 CJK characters (Llama-3's BPE spends about one token
   per 1-1.5 Chinese/Japanese/Korean characters, far denser than English);
2. an optional single space followed by 1 to 4 other letters or digits (`" word"` -> `" word"`,
   `"tokenizer"` -> `"toke" "nize" "r"`);
3. an optional single space followed by one character that is neither a letter, a digit nor
   whitespace (punctuation, symbols, `_`);
4. a run of whitespace not consumed by rules 1-3 (newlines, double spaces).

Every character belongs to exactly one token, so `"".join(tokenize(s)) == s`. English prose comes
out at about 3.5-4 characters per token, code at about 2, ids and numbers at about 2.5.

`density` (`SimOptions.token_density`, >= 1) makes every text denser, as real vocabularies are for
code, ids and non-English text: a base token of two or more characters is split into
`floor(density)` or `ceil(density)` pieces, chosen by a hash of the token string, so the same word
always splits the same way and the count grows by about `density` (single characters cannot split).

Chat template: Llama 3 style (`<|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>`):
`TEMPLATE_MESSAGE_TOKENS` (5) template tokens per message plus its content, and the prompt ends with
`TEMPLATE_GENERATION_TOKENS` (4) tokens that open the assistant's turn. The BOS token is not in the
lists (models that add one count it in num_keep, `prompt.py`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
#: The rule above. Rules 1 and 2 are swapped in the pattern: their first non-space characters are
#: disjoint classes, so at most one of them can match at a position and the order does not change
#: the tokens; letters first is cheaper for the usual text. Rule 4 must stay last (it would take the
#: space of `" word"`).
TOKEN_RE = re.compile(rf" ?[^\W_{_CJK}]{{1,4}}| ?[{_CJK}]{{1,2}}| ?[^\w\s]| ?_|\s+")
#: The same rule for ASCII-only text (`str.isascii()`), where no CJK character can occur and the
#: letters and digits of `\w` are exactly `[A-Za-z0-9]`; an explicit class is cheaper for the regex
#: engine than a negated Unicode one. `\s` stays Unicode (it includes \x1c-\x1f).
ASCII_TOKEN_RE = re.compile(r" ?[A-Za-z0-9]{1,4}| ?[^\w\s]| ?_|\s+")

#: Template tokens per chat message: `<|start_header_id|>`, the role, `<|end_header_id|>`, "\n\n", `<|eot_id|>`.
TEMPLATE_MESSAGE_TOKENS = 5
#: Tokens that open the assistant's turn: `<|start_header_id|>`, "assistant", `<|end_header_id|>`, "\n\n".
TEMPLATE_GENERATION_TOKENS = 4


def _split(token: str, density: float) -> list[str]:
    """`token` in floor(density) or ceil(density) pieces (by a hash of the token), at most len(token)."""
    whole = int(density)
    extra = density - whole
    pieces = whole + (1 if extra and (zlib.crc32(token.encode("utf-8")) % 1000) / 1000 < extra else 0)
    pieces = min(pieces, len(token))
    if pieces <= 1:
        return [token]
    step, rest = divmod(len(token), pieces)
    out, pos = [], 0
    for i in range(pieces):
        end = pos + step + (1 if i < rest else 0)
        out.append(token[pos:end])
        pos = end
    return out


def densify(tokens: Iterable[str], density: float) -> list[str]:
    """Base tokens split to `density` (1.0 returns them unchanged)."""
    if density <= 1.0:
        return list(tokens)
    out: list[str] = []
    for token in tokens:
        out += _split(token, density) if len(token) > 1 else [token]
    return out


def tokenize(text: str, density: float = 1.0) -> list[str]:
    """Split `text` into tokens (see the module docstring for the rule)."""
    tokens = (ASCII_TOKEN_RE if text.isascii() else TOKEN_RE).findall(text)
    return tokens if density <= 1.0 else densify(tokens, density)


def count_tokens(text: str, density: float = 1.0) -> int:
    """Number of tokens in `text`."""
    return len(tokenize(text, density))


def message_template(role: str, content_tokens: list[str]) -> list[str]:
    """One rendered message: the template tokens around its content tokens."""
    return ["<|start_header_id|>", role, "<|end_header_id|>", "\n\n", *content_tokens, "<|eot_id|>"]


GENERATION_TOKENS: tuple[str, ...] = ("<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n")


def render_chat(messages: Iterable[Mapping[str, str]], density: float = 1.0) -> list[str]:
    """The token sequence of a chat prompt, template tokens included."""
    out: list[str] = []
    for message in messages:
        out += message_template(str(message.get("role", "user")), tokenize(str(message.get("content") or ""), density))
    out.extend(GENERATION_TOKENS)
    return out


def chat_prompt_tokens(messages: Iterable[Mapping[str, str]], density: float = 1.0) -> int:
    """Length of `render_chat(messages, density)` without building the list."""
    total = TEMPLATE_GENERATION_TOKENS
    for message in messages:
        total += TEMPLATE_MESSAGE_TOKENS + count_tokens(str(message.get("content") or ""), density)
    return total
