"""How many requests an OpenAI-compatible server decodes at once, where it states it (`--parallel auto`).

Each server says it in its own words, read in this order:

- llama.cpp's llama-server: `GET /props` `total_slots` (its `-np`; tools/server/README.md, `get_res_props`
  in tools/server/server-context.cpp of the llama.cpp vendored by llama-cpp-python 0.3.36).
- SGLang 0.5.9 and later: `GET /v1/loads`, one entry per data-parallel rank in `loads`, each with
  `max_running_requests`; the server runs their sum.
- Older SGLang: `GET /get_server_info`, its server arguments flattened, `max_running_requests` (null when
  the user let SGLang choose, which this reader then cannot see).
- vLLM has no endpoint that states `max_num_seqs` (its `/v1/models` carries only `max_model_len`), nor
  does OpenAI: the reader says so, and the run keeps the user's number.

A field that is missing, not a positive integer or a boolean counts as not stated: a wrong guess here would
send too few requests (a slow run) or too many (a queue on the server), never lose an answer.
"""

from __future__ import annotations

from typing import Any, Protocol


class JsonGetter(Protocol):
    """The one call this module needs (`OpenAIClient.optional_json`, or a test's stand-in)."""

    host: str

    def optional_json(self, path: str) -> dict[str, Any] | None: ...


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def from_props(props: dict[str, Any] | None) -> int | None:
    """llama-server's slot count from its `/props` answer (already read for the slot context)."""
    return _count((props or {}).get("total_slots"))


def from_loads(loads: dict[str, Any] | None) -> int | None:
    """SGLang's `/v1/loads`: the sum of every rank's `max_running_requests`; None unless every rank states it."""
    ranks = (loads or {}).get("loads")
    if not isinstance(ranks, list) or not ranks:
        return None
    counts = [_count(rank.get("max_running_requests")) if isinstance(rank, dict) else None for rank in ranks]
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def server_slots(api: JsonGetter, props: dict[str, Any] | None) -> tuple[int | None, str]:
    """(requests the server decodes at once, where that number was read) or (None, why it is unknown).
    `props` is the server's `/props` answer (None: it has none), read once by the caller."""
    slots = from_props(props)
    if slots is not None:
        return slots, f"llama-server /props total_slots at {api.host}"
    if props is not None:  # a llama-server that does not say: no other server kind's endpoints to ask
        return None, f"{api.host}/props states no total_slots"
    slots = from_loads(api.optional_json("/v1/loads"))
    if slots is not None:
        return slots, f"SGLang /v1/loads max_running_requests at {api.host}"
    slots = _count((api.optional_json("/get_server_info") or {}).get("max_running_requests"))
    if slots is not None:
        return slots, f"SGLang /get_server_info max_running_requests at {api.host}"
    return None, (f"{api.host} states no slot count (llama-server /props, SGLang /v1/loads or /get_server_info; "
                  "vLLM has no endpoint for max_num_seqs)")
