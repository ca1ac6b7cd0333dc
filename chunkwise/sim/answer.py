"""One request's answer (tokens and done_reason) and the response bodies built from it."""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring  # C implementation of a JSON string literal (no ASCII escaping)
from typing import Any

from chunkwise.sim.request import CompletionRequest
from chunkwise.sim.textgen import json_text, natural_length, output_key, prose_tokens
from chunkwise.sim.tokenizer import tokenize


@dataclass
class Answer:
    tokens: list[str]
    done_reason: str  # "stop" or "length"

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def make_answer(req: CompletionRequest, answer_range: tuple[int, int], num_ctx: int, prompt_tokens: int) -> Answer:
    """The deterministic answer, cut by stop strings, num_predict, 10 x num_ctx and (shift false) the context."""
    key = output_key(req.fingerprint, req.seed, req.temperature, req.fmt)
    if req.fmt is not None:
        tokens = tokenize(json_text(key, req.fmt))
    else:
        tokens = prose_tokens(key, natural_length(key, *answer_range))
    if req.stop:
        text = "".join(tokens)
        cuts = [i for i in (text.find(s) for s in req.stop) if i >= 0]
        if cuts:
            tokens = tokenize(text[: min(cuts)])
    limit = 10 * num_ctx  # Ollama bounds num_predict -1 to 10 x num_ctx (research ollama.md section 2)
    if req.num_predict > 0:
        limit = min(limit, req.num_predict)
    if not req.shift:
        limit = min(limit, max(num_ctx - prompt_tokens, 0))
    if len(tokens) > limit:
        return Answer(tokens[:limit], "length")
    return Answer(tokens, "stop")


def now_rfc3339() -> str:
    """UTC time as Go marshals time.Time (RFC 3339, nanoseconds)."""
    ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


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


def chunk_body(req: CompletionRequest, content: str, done: bool, created_at: str | None = None, **extra: Any) -> dict[str, Any]:
    """One response object in Ollama's field order."""
    body: dict[str, Any] = {"model": req.model, "created_at": created_at or now_rfc3339()}
    if req.kind == "chat":
        body["message"] = {"role": "assistant", "content": content}
    else:
        body["response"] = content
    if "done_reason" in extra:
        body["done_reason"] = extra.pop("done_reason")
    body["done"] = done
    body.update(extra)
    return body


def stream_lines(req: CompletionRequest, pieces: list[str], created_at: str) -> bytes:
    """NDJSON `done: false` lines for `pieces` (built by hand: this runs once per token)."""
    head = '{"model":' + json.dumps(req.model) + ',"created_at":"' + created_at + '",'
    if req.kind == "chat":
        head += '"message":{"role":"assistant","content":'
        tail = '},"done":false}\n'
    else:
        head += '"response":'
        tail = ',"done":false}\n'
    return "".join([head + encode_basestring(p) + tail for p in pieces]).encode("utf-8")
