"""Conversation mode: one chat per chunk, the system prompt once, each request a user turn and its
answer an assistant turn.

Before each request the conversation is trimmed: once the predicted prompt tokens of (system
prompt + kept pairs + the new user turn) exceed the limit, the oldest request/answer pairs are
dropped until the prediction is at most `TRIM_TO_FRACTION` of the limit; the system prompt always
stays. The limit is `trim_threshold x num_ctx`, and never more than `num_ctx - num_predict` (the
answer needs room: chunkwise sends `shift: false`, so a full context ends the answer instead of
silently dropping half of it).

Why trim in one large step rather than one pair per turn: the server keeps each slot's last prompt
and re-evaluates only what follows the longest common prefix (Ollama's prompt cache,
`v0.24.0:runner/ollamarunner/cache.go:96-229`, LoadCacheSlot and countCommonPrefix; llama-server's
`cache_prompt`). Dropping the oldest pair changes the prompt right after the system prompt, so the
whole history is evaluated again; a conversation that drops one pair per turn does that on every
turn once it is full (on dense text 54-58 of 60 turns). After a trim down to the fraction, the next
turns only append, and each re-evaluates just its new pair until the limit is reached again. The
price is a shorter history on average (between the fraction and the whole limit instead of the
whole limit).

Predictions rest on the server's own counts, not on a characters-per-token guess: once a turn has
been answered, the next prompt is that turn's `prompt_eval_count` plus its answer (`eval_count`)
plus an estimate of only the new text, scaled by the density the server showed for this
conversation and a safety margin (`NEW_TEXT_MARGIN`). Dense text (code, ids, non-English) then
trims earlier instead of overflowing. Only the first turn relies on the estimate alone.

After a context-exceeded answer, `prepare(..., harder=True)` trims to `HARDER_FRACTION` of the
limit for one retry (the ledger records that retry, so a rebuilt conversation trims the same way).

Everything a prediction uses (the texts and the server's counts) is in the ledger, so a
conversation rebuilt after a crash trims exactly as the uninterrupted one did.

A row with its own `system` prompt different from the conversation's starts a new conversation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from chunkwise.tokens import GENERATION_PROMPT_TOKENS, MESSAGE_OVERHEAD_TOKENS, estimate_tokens

#: New text is estimated at this many times its expected tokens (density varies within a chat).
NEW_TEXT_MARGIN = 1.25
#: A retry after a context-exceeded answer trims to this fraction of the usual limit.
HARDER_FRACTION = 0.75
#: A trim drops pairs until the prompt is predicted at this fraction of the limit (see the module docstring).
TRIM_TO_FRACTION = 0.5


@dataclass(frozen=True)
class Pair:
    user: str
    assistant: str
    #: Predicted tokens of the pair in a prompt: the user turn at the conversation's density, the
    #: answer at the server's `eval_count` when known, template overhead for both.
    tokens: int


class Conversation:
    def __init__(self, system: str, *, num_ctx: int, trim_threshold: float, chars_per_token: float,
                 num_predict: int = 0) -> None:
        self.system = system
        self.limit = max(1, min(int(trim_threshold * num_ctx), num_ctx - num_predict))
        self.chars_per_token = chars_per_token
        self.pairs: deque[Pair] = deque()
        self.pair_tokens = 0
        #: Server-measured tokens per estimated token for this conversation (1.0 until measured).
        self.density = 1.0
        #: The server's size of the conversation so far (last prompt + its answer), minus dropped
        #: pairs; None until a turn has been answered since the last restart.
        self.anchor: int | None = None
        #: Pairs dropped by trimming, conversations restarted, harder trims, over the conversation's life.
        self.trimmed = 0
        self.restarts = 0
        self.harder_trims = 0

    def _estimate(self, text: str) -> int:
        return estimate_tokens(len(text), self.chars_per_token) + MESSAGE_OVERHEAD_TOKENS

    def _estimated_all(self, user: str) -> int:
        system = self._estimate(self.system) if self.system else 0
        return system + sum(self._estimate(p.user) + self._estimate(p.assistant) for p in self.pairs) + \
            self._estimate(user) + GENERATION_PROMPT_TOKENS

    def _new_text(self, user: str) -> int:
        return int(self._estimate(user) * self.density * NEW_TEXT_MARGIN + 0.5)

    def estimated_tokens(self, user: str) -> int:
        """Predicted prompt tokens if `user` were sent now (after any trimming already done)."""
        if self.anchor is not None:
            return self.anchor + self._new_text(user)
        fixed = (self._estimate(self.system) if self.system else 0) + GENERATION_PROMPT_TOKENS
        return int(fixed * self.density + 0.5) + self.pair_tokens + self._new_text(user)

    def _restart(self, system: str) -> None:
        self.system = system
        self.pairs.clear()
        self.pair_tokens = 0
        self.anchor = None
        self.restarts += 1

    def _drop_oldest(self) -> None:
        pair = self.pairs.popleft()
        self.pair_tokens -= pair.tokens
        if self.anchor is not None:
            self.anchor -= pair.tokens
        self.trimmed += 1

    def prepare(self, user: str, system: str | None = None, *, harder: bool = False) -> list[dict[str, str]]:
        """Trim for `user` (restarting on a different system prompt) and return the messages to send.

        `harder`: the previous attempt of this turn exceeded the context; the limit is HARDER_FRACTION
        of the usual one.
        """
        if system is not None and system != self.system:
            self._restart(system)
        limit = self.limit
        if harder:
            self.harder_trims += 1
            limit = int(limit * HARDER_FRACTION)
        if self.pairs and self.estimated_tokens(user) > limit:
            target = int(limit * TRIM_TO_FRACTION)
            while self.pairs and self.estimated_tokens(user) > target:
                self._drop_oldest()
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for pair in self.pairs:
            messages.append({"role": "user", "content": pair.user})
            messages.append({"role": "assistant", "content": pair.assistant})
        messages.append({"role": "user", "content": user})
        return messages

    def add(self, user: str, assistant: str, *, prompt_eval_count: int | None = None,
            eval_count: int | None = None) -> None:
        """Append an answered request as a user/assistant pair, learning from the server's counts.

        `prompt_eval_count` is the server's size of the prompt just sent (system, kept pairs and
        `user`, template included); `eval_count` the answer's tokens (thinking included, which
        over-counts the answer kept in the history: safe).
        """
        estimated_prompt = self._estimated_all(user)
        if prompt_eval_count and estimated_prompt > 0:
            self.density = prompt_eval_count / estimated_prompt
        answer = (eval_count or 0) + MESSAGE_OVERHEAD_TOKENS if eval_count else \
            int(self._estimate(assistant) * self.density + 0.5)
        user_tokens = int(self._estimate(user) * self.density + 0.5)
        tokens = user_tokens + answer
        self.pairs.append(Pair(user, assistant, tokens))
        self.pair_tokens += tokens
        if prompt_eval_count:
            self.anchor = prompt_eval_count + answer
        elif self.anchor is not None:
            self.anchor += tokens
