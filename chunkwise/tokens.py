"""Client-side token estimates and silent-truncation detection.

Ollama has no tokenize endpoint (none in its route table, `server/routes.go`, up to v0.33; requested
in ollama/ollama#3582), so chunkwise estimates a prompt's
tokens from its length in characters. The ratio starts at `DEFAULT_CHARS_PER_TOKEN` (English BPE
vocabularies give about 4) and is recalibrated from the run's own answers: every answered request
whose `prompt_eval_count` is well below the context (so it cannot have been cut) contributes
`characters / prompt_eval_count`. The calibrated ratio is the median of those samples; its error
bar is the spread between their 5th and 95th percentiles, and the truncation tolerance widens with
it.

A prompt is flagged `context_truncated` when Ollama evaluated clearly fewer tokens than expected
(`observed < expected x (1 - tolerance)`), or when the evaluated prompt filled the whole context
(`observed >= num_ctx`: Ollama v0.4-v0.29 cut to exactly num_ctx). A prompt of exactly
`num_ctx - 1` tokens is legal (llama-server refuses only `n_tokens >= n_ctx`, ollama
llm/llama_server.go v0.33.0-rc2) and is judged by the shortfall rule alone, which also catches
v0.30.11+'s cut to about num_ctx / 2 + 2 (and v0.30.0-v0.30.10's cut to num_ctx - 1 when the
overshoot is clear). Since every request sends `truncate: false`, servers from v0.12.6 refuse an
over-long prompt with a 400 instead of cutting it, and llama-server (and every other OpenAI-compatible
server) refuses it too: against such a server (`ServerFacts.cuts_prompts` false) an answered prompt was
never cut, so only the whole-context rule applies. The shortfall rule is kept for the eras that cut, where
it is the only sign of a cut: on mixed-density input (digits or CJK at 1-2 characters per token beside
prose at 4-6) one ratio is wrong for part of the rows, and applying it to a server that cannot cut flagged
ordinary prose rows (issue 19 item 2; tests/test_real_ollama.py measures it on a real Ollama).

Chat-template overhead is chunkwise's own estimate, not any server's or the simulator's: Llama 3's
template (`<|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|>`) spends 5 tokens per
message, plus `<|begin_of_text|>` and the 4 tokens that open the assistant's turn. The conversation
trimmer corrects every estimate with the server's own `prompt_eval_count`.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from typing import Any

DEFAULT_CHARS_PER_TOKEN = 4.0
#: Tolerance before calibration: the default ratio may be off by this fraction for unusual text.
UNCALIBRATED_TOLERANCE = 0.35
#: Never flag a shortfall smaller than this fraction, however tight the calibration.
MIN_TOLERANCE = 0.15
#: Samples needed before the calibrated ratio replaces the default.
MIN_SAMPLES = 20
#: Samples kept (the first ones of the run; later answers don't move the ratio).
MAX_SAMPLES = 500
#: Estimated chat-template tokens around each message (start marker, role, separator, end marker). Real
#: templates spend about this many: Llama 3.1's wraps each message in `<|start_header_id|>`, the role,
#: `<|end_header_id|>`, a blank line and `<|eot_id|>`. Changing it changes how a conversation is trimmed,
#: so a resumed run would trim differently from the run it resumes.
MESSAGE_OVERHEAD_TOKENS = 5
#: Estimated template tokens outside the messages: BOS, then the assistant turn's opening header.
GENERATION_PROMPT_TOKENS = 5
#: Characters per token no tokenizer goes above; used to reject prompts that cannot fit at all.
MAX_PLAUSIBLE_CHARS_PER_TOKEN = 8.0


def estimate_tokens(chars: int, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    """Estimated tokens for `chars` characters of text."""
    return round(chars / chars_per_token)


def min_plausible_tokens(chars: int) -> int:
    """A lower bound on the tokens of `chars` characters: no vocabulary packs text tighter."""
    return int(chars // MAX_PLAUSIBLE_CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Calibration:
    """The ratio in use and how sure we are of it."""

    chars_per_token: float
    samples: int
    #: Relative half-width of the 5th-95th percentile band of the samples (0.1 = +-10 %).
    relative_error: float
    calibrated: bool

    @property
    def tolerance(self) -> float:
        if not self.calibrated:
            return UNCALIBRATED_TOLERANCE
        return max(MIN_TOLERANCE, 2.0 * self.relative_error)

    def as_dict(self) -> dict[str, Any]:
        return {
            "chars_per_token": round(self.chars_per_token, 4),
            "samples": self.samples,
            "relative_error": round(self.relative_error, 4),
            "calibrated": self.calibrated,
            "truncation_tolerance": round(self.tolerance, 4),
        }


class TokenEstimator:
    """Thread-safe chars-per-token calibration shared by all chunks of a run."""

    def __init__(self, initial_chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        self._ratios: list[float] = []
        self._lock = threading.Lock()
        self._calibration = Calibration(initial_chars_per_token, 0, 0.0, False)

    @property
    def calibration(self) -> Calibration:
        return self._calibration

    def observe(self, chars: int, prompt_eval_count: int | None, num_ctx: int) -> None:
        """Record one answered request. Counts near or above half the context are ignored: they may
        have been cut, and a cut count would teach the estimator that text is denser than it is."""
        if not prompt_eval_count or chars <= 0 or prompt_eval_count >= num_ctx // 2:
            return
        with self._lock:
            if len(self._ratios) >= MAX_SAMPLES:
                return
            self._ratios.append(chars / prompt_eval_count)
            if len(self._ratios) >= MIN_SAMPLES:
                ratios = sorted(self._ratios)
                median = statistics.median(ratios)
                lo = ratios[int(0.05 * (len(ratios) - 1))]
                hi = ratios[int(0.95 * (len(ratios) - 1))]
                self._calibration = Calibration(median, len(ratios), (hi - lo) / (2 * median), True)

    def expected_tokens(self, chars: int) -> int:
        return estimate_tokens(chars, self._calibration.chars_per_token)

    def is_truncated(self, chars: int, prompt_eval_count: int | None, num_ctx: int, *,
                     server_cuts: bool = True) -> bool:
        """Whether the server evaluated a cut prompt (see the module docstring for the rule); `server_cuts`
        false for a server that refuses over-long prompts instead of cutting them."""
        if prompt_eval_count is None:
            return False
        if prompt_eval_count >= num_ctx:
            return True
        if not server_cuts:
            return False
        expected = self.expected_tokens(chars)
        return prompt_eval_count < expected * (1.0 - self._calibration.tolerance)
