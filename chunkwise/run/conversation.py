"""Conversation mode: one chat per chunk, the system prompt once, each request a user turn and its
answer an assistant turn.

Before each request the conversation is trimmed: while the estimated tokens of (system prompt +
kept pairs + the new user turn) exceed `trim_threshold x num_ctx`, the oldest request/answer pair
is dropped; the system prompt always stays. Estimates use the run's fixed characters-per-token
ratio (recorded in the manifest), so a conversation rebuilt from the ledger after a crash trims
exactly as the uninterrupted one did and gets the same answers.

A row with its own `system` prompt different from the conversation's starts a new conversation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from chunkwise.tokens import GENERATION_PROMPT_TOKENS, MESSAGE_OVERHEAD_TOKENS, estimate_tokens


@dataclass(frozen=True)
class Pair:
    user: str
    assistant: str
    tokens: int


class Conversation:
    def __init__(self, system: str, *, num_ctx: int, trim_threshold: float, chars_per_token: float) -> None:
        self.system = system
        self.limit = int(trim_threshold * num_ctx)
        self.chars_per_token = chars_per_token
        self.pairs: deque[Pair] = deque()
        self.pair_tokens = 0
        #: Pairs dropped by trimming and conversations restarted, over the conversation's life.
        self.trimmed = 0
        self.restarts = 0

    def _tokens(self, text: str) -> int:
        return estimate_tokens(len(text), self.chars_per_token) + MESSAGE_OVERHEAD_TOKENS

    def _fixed_tokens(self, user: str) -> int:
        system = self._tokens(self.system) if self.system else 0
        return system + self._tokens(user) + GENERATION_PROMPT_TOKENS

    def estimated_tokens(self, user: str) -> int:
        """Estimated prompt tokens if `user` were sent now."""
        return self._fixed_tokens(user) + self.pair_tokens

    def prepare(self, user: str, system: str | None = None) -> list[dict[str, str]]:
        """Trim for `user` (restarting on a different system prompt) and return the messages to send."""
        if system is not None and system != self.system:
            self.system = system
            self.pairs.clear()
            self.pair_tokens = 0
            self.restarts += 1
        budget = self.limit - self._fixed_tokens(user)
        while self.pairs and self.pair_tokens > budget:
            self.pair_tokens -= self.pairs.popleft().tokens
            self.trimmed += 1
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for pair in self.pairs:
            messages.append({"role": "user", "content": pair.user})
            messages.append({"role": "assistant", "content": pair.assistant})
        messages.append({"role": "user", "content": user})
        return messages

    def add(self, user: str, assistant: str) -> None:
        """Append an answered request as a user/assistant pair."""
        tokens = self._tokens(user) + self._tokens(assistant)
        self.pairs.append(Pair(user, assistant, tokens))
        self.pair_tokens += tokens
