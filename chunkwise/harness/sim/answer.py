"""One request's answer (thinking and content tokens, done_reason) and the response bodies built from it.

Thinking (`req.think` set, request.py): the trace comes first, in `message.thinking` (chat) or
`thinking` (generate), then the content. Its tokens count in eval_count and against num_predict
(one generation budget: `v0.33.0-rc2:llm/llama_server.go` sends num_predict as llama-server's
n_predict for the whole output), so a long trace can leave an empty `content` with done_reason
"length" (research ollama-fidelity-audit.md #14). Its length is `SimOptions.thinking_tokens`
scaled by the level (low 0.5, medium 1, high 1.5, max 2).

Context (`shift`): when prompt + generated tokens reach num_ctx, llama-server (started with
`--context-shift --keep num_keep`, `v0.33.0-rc2:llm/llama_server.go:789-800`) discards half of the
tokens after the first `keep` and goes on; done_reason stays "stop" and prompt_eval_count is
unchanged (audit #21; llama.cpp `tools/server` context shift: n_discard = (n_past - n_keep) / 2, read
from third-party copies, not in Ollama's tree). With `shift: false` generation stops when the context
is full, done_reason "length" (stop_type "limit", `llm/llama_server.go:1713-1716`).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from json.encoder import (
    encode_basestring,  # C implementation of a JSON string literal (no ASCII escaping)
)
from typing import Any

from chunkwise.harness.sim.request import CompletionRequest
from chunkwise.harness.sim.textgen import json_text, natural_length, output_key, prose_tokens
from chunkwise.harness.sim.tokenizer import densify, tokenize

THINK_SCALE = {"low": 0.5, "medium": 1.0, "high": 1.5, "max": 2.0}


@dataclass
class Answer:
    tokens: list[str]
    done_reason: str  # "stop" or "length"
    #: Thinking tokens, generated before `tokens`.
    thinking: list[str] = field(default_factory=list)
    #: Context shifts during generation (each drops half the context after num_keep).
    shifts: int = 0
    #: Tokens generated after `tokens` and not shown: the ones that completed a stop string.
    stop_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def thinking_text(self) -> str:
        return "".join(self.thinking)

    @property
    def eval_count(self) -> int:
        return len(self.thinking) + len(self.tokens) + self.stop_tokens


def context_shifts(prompt_tokens: int, generated: int, num_ctx: int, keep: int) -> tuple[int, int]:
    """(shifts, final position) of generating `generated` tokens after `prompt_tokens` with context shift."""
    pos, left, shifts = prompt_tokens, generated, 0
    while left > 0:
        room = num_ctx - pos
        if room > 0:
            step = min(room, left)
            pos, left = pos + step, left - step
            continue
        discard = max((pos - keep) // 2, 1)
        pos -= discard
        shifts += 1
    return shifts, pos


def final_cache(prompt: list[str], generated: list[str], num_ctx: int, keep: int) -> list[str]:
    """What the slot holds after generating `generated` with context shift: the shifted context."""
    seq = list(prompt)
    rest = list(generated)
    while rest:
        room = num_ctx - len(seq)
        if room > 0:
            seq += rest[:room]
            rest = rest[room:]
            continue
        discard = max((len(seq) - keep) // 2, 1)
        del seq[keep : keep + discard]
    return seq


def _thinking_tokens(req: CompletionRequest, key: bytes, thinking_range: tuple[int, int], density: float) -> list[str]:
    if not req.think:
        return []
    scale = THINK_SCALE.get(req.think, 1.0)
    lo, hi = max(1, round(thinking_range[0] * scale)), max(1, round(thinking_range[1] * scale))
    think_key = output_key(req.fingerprint + "|think", req.seed, req.temperature, None)
    return densify(prose_tokens(think_key, natural_length(think_key, lo, hi)), density)


def make_answer(req: CompletionRequest, answer_range: tuple[int, int], num_ctx: int, prompt_tokens: int,
                density: float = 1.0, thinking_range: tuple[int, int] = (32, 256), keep: int = 4,
                unbounded_zero: bool = False) -> Answer:
    """The deterministic answer, cut by stop strings, num_predict, 10 x num_ctx and (shift false) the context.
    `unbounded_zero`: num_predict 0 sets no limit at all (the Go-runner eras, era.py)."""
    key = output_key(req.fingerprint, req.seed, req.temperature, req.fmt)
    if req.fmt is not None:
        tokens = tokenize(json_text(key, req.fmt), density)
    else:
        tokens = densify(prose_tokens(key, natural_length(key, *answer_range)), density)
    shown, stop_tokens = _stop(tokens, req.stop, density)
    thinking = _thinking_tokens(req, key, thinking_range, density)
    limit = 10 * num_ctx  # Ollama bounds num_predict -1 to 10 x num_ctx (research ollama.md section 2)
    if req.num_predict > 0:
        limit = min(limit, req.num_predict)
    elif req.num_predict == 0 and unbounded_zero:
        limit = len(thinking) + len(tokens)
    if not req.shift:
        limit = min(limit, max(num_ctx - prompt_tokens, 0))
    if len(thinking) >= limit and (thinking or tokens):
        return Answer([], "length", thinking[:limit])
    limit -= len(thinking)
    reason = "stop"
    if len(shown) + stop_tokens > limit:  # the limit comes first (the stop string, if any, is not reached)
        tokens, stop_tokens, reason = tokens[:limit], 0, "length"
    else:
        tokens = shown
    shifts = 0
    if req.shift:
        shifts, _ = context_shifts(prompt_tokens, len(thinking) + len(tokens) + stop_tokens, num_ctx, keep)
    return Answer(tokens, reason, thinking, shifts, stop_tokens)


def _stop(tokens: list[str], stops: list[str], density: float) -> tuple[list[str], int]:
    """The tokens shown before the first stop string, and how many more were generated to complete it:
    the runner samples the token that completes a stop string, counts it, and cuts the text
    (`v0.24.0:runner/ollamarunner/runner.go:750-830`)."""
    text = "".join(tokens)
    cuts = [(i, len(s)) for i, s in ((text.find(s), s) for s in stops) if i >= 0]
    if not cuts:
        return tokens, 0
    at, length = min(cuts)
    generated, pos = 0, 0
    while pos < at + length and generated < len(tokens):
        pos += len(tokens[generated])
        generated += 1
    shown = tokenize(text[:at], density)
    return shown, max(0, generated - len(shown))


#: (second, its "YYYY-MM-DDTHH:MM:SS" text): formatted once per second, not once per line.
_SECOND: list[Any] = [None, ""]


def now_rfc3339() -> str:
    """UTC time as Go marshals time.Time (RFC 3339, nanoseconds)."""
    ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    if seconds != _SECOND[0]:
        _SECOND[0], _SECOND[1] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_SECOND[1]}.{frac:09d}Z"


@lru_cache(maxsize=65536)
def token_id(token: str) -> int:
    """A stable id for a token string (the simulated vocabulary has 128,000 ids)."""
    return zlib.crc32(token.encode("utf-8")) % 128000


def metrics(total: int, load: int, prompt_count: int, prompt_ns: int, eval_count: int, eval_ns: int) -> dict[str, int]:
    """Ollama's Metrics: integer nanoseconds, and like Ollama every zero value is omitted (omitempty)."""
    pairs = (
        ("total_duration", total), ("load_duration", load), ("prompt_eval_count", prompt_count),
        ("prompt_eval_duration", prompt_ns), ("eval_count", eval_count), ("eval_duration", eval_ns),
    )
    return {k: v for k, v in pairs if v}


def chunk_body(req: CompletionRequest, content: str, done: bool, created_at: str | None = None, thinking: str = "",
               **extra: Any) -> dict[str, Any]:
    """One response object in Ollama's field order (`thinking` is omitempty, `api/types.go:202,909`)."""
    body: dict[str, Any] = {"model": req.model, "created_at": created_at or now_rfc3339()}
    if req.kind == "chat":
        body["message"] = {"role": "assistant", "content": content}
        if thinking:
            body["message"]["thinking"] = thinking
    else:
        body["response"] = content
        if thinking:
            body["thinking"] = thinking
    if "done_reason" in extra:
        body["done_reason"] = extra.pop("done_reason")
    body["done"] = done
    body.update(extra)
    return body


def stream_lines(req: CompletionRequest, pieces: list[str], created_at: str, thinking: bool = False) -> bytes:
    """NDJSON `done: false` lines for `pieces` (built by hand: this runs once per token).
    `thinking`: the pieces are thinking text (content "", the piece in `thinking`)."""
    head = '{"model":' + json.dumps(req.model) + ',"created_at":"' + created_at + '",'
    if req.kind == "chat":
        if thinking:
            head += '"message":{"role":"assistant","content":"","thinking":'
        else:
            head += '"message":{"role":"assistant","content":'
        tail = '},"done":false}\n'
    elif thinking:
        head += '"response":"","thinking":'
        tail = ',"done":false}\n'
    else:
        head += '"response":'
        tail = ',"done":false}\n'
    if not pieces:
        return b""
    # one line per piece: head + JSON string + tail, joined in C (the lines differ only in the piece)
    return (head + (tail + head).join(map(encode_basestring, pieces)) + tail).encode("utf-8")
