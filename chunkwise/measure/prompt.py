"""Prompts of a chosen size for `chunkwise measure`.

The filler is lowercase English words of at most four letters and full stops. Each word with its
leading space is one token in `chunkwise.harness.sim.tokenizer` (the simulator's) and, being a common word,
one token in the BPE vocabularies of llama 3, qwen 2.5 and gemma 2; that makes the text about
4 characters per token for both, and its token count predictable.

Against the simulator the count is exact (`chat_prompt_tokens` is what the simulator evaluates).
Against a real Ollama there is no tokenize endpoint (ollama/ollama#3582), so the prompt
is sized from a characters-per-token ratio (`estimate.DEFAULT_CHARS_PER_TOKEN` at first, then the
ratio Ollama's own `prompt_eval_count` showed for the previous, uncut prompt), and the truncation
check uses the wider tolerance of an estimate. Each prompt starts with its context size, so no
prompt shares a prefix with the previous one and prefill is never served from a cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunkwise.tokens import DEFAULT_CHARS_PER_TOKEN, MIN_TOLERANCE, UNCALIBRATED_TOLERANCE

WORDS = (
    "the and of to in is was for on that with as it at by this from are be or an but not have they you we all "
    "can one had his her more when will time some into them may than then each what who our out new made much "
    "most over such very well also back only work year life day way long road town tree farm boat rain wind "
    "snow fire gold iron salt milk corn fish bird wolf bear deer"
).split()

#: Relative tolerance of the truncation check when the token count is exact (simulator).
EXACT_TOLERANCE = 0.02


@dataclass(frozen=True)
class BuiltPrompt:
    """A chat prompt and what we expect Ollama to count for it (tokens)."""

    messages: list[dict[str, str]]
    chars: int
    expected_tokens: int
    method: str
    tolerance: float


def filler(units: int, seed: int) -> str:
    """`units` tokens of filler text (words, and a full stop after every 12th word)."""
    state = (seed * 2654435761 + 12345) & 0xFFFFFFFF
    out: list[str] = []
    for i in range(max(0, units)):
        if i % 13 == 12:
            out.append(".")
            continue
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(" " + WORDS[(state >> 8) % len(WORDS)])
    return "".join(out)


def _messages(num_ctx: int, body: str) -> list[dict[str, str]]:
    content = (
        f"Context size test {num_ctx}. Read the text below.\n{body}\n"
        "Now write a long story about the text above."
    )
    return [{"role": "user", "content": content}]


def build_prompt(
    num_ctx: int,
    target_tokens: int,
    *,
    exact: bool,
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
    calibrated: bool = False,
) -> BuiltPrompt:
    """A prompt of about `target_tokens` tokens (template tokens included) for context `num_ctx`.

    exact: count with chunkwise's tokenizer (the simulator's); the result has exactly
    `target_tokens` tokens unless the fixed header and footer alone are longer.
    Otherwise: size the text as `target_tokens x chars_per_token` characters.
    """
    if exact:
        from chunkwise.harness.sim.tokenizer import chat_prompt_tokens  # the simulator's count; not needed otherwise

        fixed = chat_prompt_tokens(_messages(num_ctx, ""))
        units = max(0, target_tokens - fixed)
        for _ in range(8):  # joins between header, filler and footer may merge or split a token
            messages = _messages(num_ctx, filler(units, num_ctx))
            count = chat_prompt_tokens(messages)
            if count == target_tokens or (units == 0 and count > target_tokens):
                break
            units = max(0, units + target_tokens - count)
        chars = len(messages[0]["content"])
        return BuiltPrompt(messages, chars, count, "exact (chunkwise tokenizer)", EXACT_TOLERANCE)
    target_chars = int(target_tokens * chars_per_token)
    fixed_chars = len(_messages(num_ctx, "")[0]["content"])
    # About 4 characters per filler unit; trim to the character budget.
    body = filler(max(0, (target_chars - fixed_chars) // 3 + 8), num_ctx)[: max(0, target_chars - fixed_chars)]
    body = body.rsplit(" ", 1)[0] if " " in body else body
    messages = _messages(num_ctx, body)
    chars = len(messages[0]["content"])
    tolerance = MIN_TOLERANCE if calibrated else UNCALIBRATED_TOLERANCE
    method = f"estimate ({chars_per_token:.2f} chars/token{', calibrated' if calibrated else ''})"
    return BuiltPrompt(messages, chars, round(chars / chars_per_token), method, tolerance)
