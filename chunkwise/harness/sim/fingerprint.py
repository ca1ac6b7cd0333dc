"""Request fingerprints: which logical request a chat/generate call is, whatever its options.

The fingerprint is the first 32 hex digits of sha256 over canonical JSON (sorted keys, no spaces,
UTF-8) of `{"model", "messages"}` for /api/chat or `{"model", "system", "prompt"}` for
/api/generate (a missing system or prompt counts as ""). Options, stream, format and keep_alive
are NOT part of it, so a retry with other options is the same request. /sim/stats counts
receipts and answers per fingerprint, and fault draws depend on it (see `faults.py`); a pipeline
can compute the same value client-side to check "every item answered exactly once".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from json.encoder import encode_basestring  # what json.dumps(ensure_ascii=False) uses for str
from typing import Any

FINGERPRINT_HEX = 32


def _digest(obj: dict[str, Any]) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX]


@lru_cache(maxsize=256)
def _message_json(role: str, content: str) -> str:
    """Canonical JSON of {"role", "content"}; cached because a batch repeats its system prompt."""
    return '{"content":' + encode_basestring(content) + ',"role":' + encode_basestring(role) + "}"


@lru_cache(maxsize=64)
def _head_hash(role: str, content: str) -> Any:
    """sha256 state after `{"messages":[` and the first message; cached because a batch starts every
    request with the same system prompt (copied per request, so its text is hashed once)."""
    return hashlib.sha256(('{"messages":[' + _message_json(role, content)).encode("utf-8"))


def chat_fingerprint(model: str, messages: Sequence[Mapping[str, Any]]) -> str:
    """Fingerprint of an /api/chat request (messages exactly as sent)."""
    if isinstance(model, str) and all(
        type(m) is dict and m.keys() == {"role", "content"} and type(m["role"]) is str and type(m["content"]) is str
        for m in messages
    ):  # the usual shape, encoded piecewise: the same text as _digest builds
        tail = '],"model":' + encode_basestring(model) + "}"
        if not messages:
            return hashlib.sha256(('{"messages":[' + tail).encode("utf-8")).hexdigest()[:FINGERPRINT_HEX]
        first = messages[0]
        digest = _head_hash(first["role"], first["content"]).copy()
        rest = "".join(["," + _message_json(m["role"], m["content"]) for m in messages[1:]])
        digest.update((rest + tail).encode("utf-8"))
        return str(digest.hexdigest()[:FINGERPRINT_HEX])
    return _digest({"model": model, "messages": list(messages)})


def generate_fingerprint(model: str, prompt: str | None, system: str | None = None) -> str:
    """Fingerprint of an /api/generate request."""
    return _digest({"model": model, "system": system or "", "prompt": prompt or ""})


def request_fingerprint(endpoint: str, body: Mapping[str, Any]) -> str:
    """Fingerprint of a request body sent to `endpoint` ("/api/chat" or "/api/generate", or "chat"/"generate")."""
    if endpoint.rstrip("/").endswith("chat"):
        return chat_fingerprint(body.get("model", ""), body.get("messages") or [])
    return generate_fingerprint(body.get("model", ""), body.get("prompt"), body.get("system"))
