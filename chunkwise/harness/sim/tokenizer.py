"""The simulator's own tokenizer (the client must not import it): token counts by character class.

It is not a real model's BPE; it counts like one. One regular expression splits text left to right,
first alternative that matches wins, and every character belongs to exactly one token, so
`"".join(tokenize(s)) == s`:

1. an optional single space, then 1 or 2 CJK characters (kana, CJK ideographs, hangul);
2. an optional single space, then up to `LETTERS_PER_TOKEN` (10) other letters: most words are one
   token, a long word is cut every 10 letters;
3. one digit (every digit is a token of its own; a space before a number is a token of its own too);
4. an optional single space, then up to `SYMBOLS_PER_TOKEN` (3) characters that are neither letters,
   digits nor whitespace (punctuation, operators, `_`);
5. one newline;
6. one or two other whitespace characters (spaces, tabs).

The constants are the Gemma 3 tokenizer's, measured through a real Ollama 0.24.0 serving gemma3-270m:
`prompt_eval_count` of one user message minus that of an empty one (9 template tokens), text by text
(`tests/support/gemma_density.py`, 2026-12-06):

    class            chars  Gemma tokens  chars/token   this tokenizer
    English prose      469        77         6.09            79
    long words         579        64         9.05            64
    6-digit numbers    279       279         1.00           279
    digit run          200       200         1.00           200
    symbols            261       120         2.17           120
    Python code        359       162         2.22           163
    Chinese            122        69         1.77            68
    newlines            40        40         1.00            40
    60 spaces           62        32         1.94            32
    indented lines     299       179         1.67           179

So, unlike the client's single 4.0 characters per token, the density depends on what the text is:
about 6 for English prose, 2.2 for code, 1.8 for Chinese, 1 for digits.

`density` (`SimOptions.token_density`, >= 1) makes every text denser, as smaller vocabularies are: a
token of two or more characters is split into `floor(density)` or `ceil(density)` pieces, chosen by a
hash of the token string, so the same word always splits the same way and the count grows by about
`density` (single characters cannot split).

Chat templates (the tokens around each message, a BOS token, the generation prompt) are per model
family: `templates.py`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
#: Letters of a word per token (Gemma: 9.05 chars/token on long words, most words one token).
LETTERS_PER_TOKEN = 10
#: Punctuation/symbol characters per token (Gemma: " ==", " ->" are one token each).
SYMBOLS_PER_TOKEN = 3
#: CJK characters per token (Gemma: 1.77 chars/token on Chinese prose with its punctuation).
CJK_PER_TOKEN = 2
#: Spaces or tabs per token (Gemma: 60 spaces in 30 tokens).
BLANKS_PER_TOKEN = 2

TOKEN_RE = re.compile(
    rf" ?[{_CJK}]{{1,{CJK_PER_TOKEN}}}"
    rf"| ?[^\W\d_{_CJK}]{{1,{LETTERS_PER_TOKEN}}}"
    r"|\d"
    rf"| ?[^\w\s]{{1,{SYMBOLS_PER_TOKEN}}}| ?_{{1,{SYMBOLS_PER_TOKEN}}}"
    r"|\n"
    rf"|[^\S\n]{{1,{BLANKS_PER_TOKEN}}}"
)
#: The same rule for ASCII-only text (`str.isascii()`): no CJK, and letters are `[A-Za-z]` (cheaper
#: for the regex engine than the negated Unicode class). `\s` stays Unicode (it includes \x1c-\x1f).
ASCII_TOKEN_RE = re.compile(
    rf" ?[A-Za-z]{{1,{LETTERS_PER_TOKEN}}}"
    r"|\d"
    rf"| ?[^\w\s]{{1,{SYMBOLS_PER_TOKEN}}}| ?_{{1,{SYMBOLS_PER_TOKEN}}}"
    r"|\n"
    rf"|[^\S\n]{{1,{BLANKS_PER_TOKEN}}}"
)


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


def chat_prompt_tokens(messages: Iterable[Mapping[str, object]], density: float = 1.0) -> int:
    """Tokens of a chat prompt under the llama3 template, BOS included (`templates.chat_prompt_tokens`
    for the other families)."""
    from chunkwise.harness.sim.templates import LLAMA3
    from chunkwise.harness.sim.templates import chat_prompt_tokens as count

    return count(messages, density, LLAMA3)
