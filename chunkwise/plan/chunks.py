"""Chunk sizing: pure functions over an InputSummary and RunParams.

Chunk size (the reference design): `floor(0.8 x (budget - system prompt tokens) / mean tokens per
request)`, where the budget is num_ctx in conversation mode and chunk_token_budget in independent
mode, and tokens per request = estimated prompt tokens (characters / chars_per_token) + expected
answer tokens. The chunk count is round-half-up(n / chunk size), raised until no chunk is more than
2 % over the size, with rows spread evenly (sizes differ by at most one): 5,000 requests at 111 give
45 chunks, 170,000 give 1,532.

Conversation mode ends with a taper (`tail_sizes`): the last chunks get smaller, `parallel` of each size,
halving down to one row. Why: a conversation's turns go one after another and hold its slot, so without it
the run ends as raggedly as its conversations are long: the threads that drew a longer last conversation
(one more turn, longer answers) send alone while the other slots have nothing left they may send (18 s of
a 130-s run at 256 conversations, 5 % of the slot time; bench/results/fast_engine.md). With chunks
handed out in plan order to whichever conversation slot frees first, the last ones to go are one-row
chunks, so the slots finish within about one answer of each other (guided self-scheduling and factoring:
Polychronopoulos & Kuck 1987, Hummel, Schonberg & Flynn 1992). The price: the tail's rows see shorter
histories and its system prompt is sent once per tail chunk (`parallel` x log2(chunk size) chunks).

The run plan `chunkwise plan` prints is built from these in `chunkwise.plan.report`. A conversation run passes
the characters per token the server counted on a sample of its rows (`chunkwise.run.density`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from chunkwise.inputs.summary import InputSummary
from chunkwise.params import RunParams
from chunkwise.tokens import estimate_tokens

FILL = 0.8
#: A chunk may be at most this much larger than the chunk size (rounding of the chunk count).
MAX_OVERSIZE = 1.02


def chunk_size_rule(budget_tokens: int, system_prompt_tokens: int, mean_request_tokens: float,
                    fill: float = FILL) -> int:
    """Requests per chunk: floor(fill x (budget - system) / mean), at least 1."""
    room = budget_tokens - system_prompt_tokens
    if room <= 0:
        raise ValueError(
            f"the system prompt ({system_prompt_tokens} tokens) leaves no room in the chunk budget of "
            f"{budget_tokens} tokens; shorten the system prompt or raise num_ctx (conversation) or "
            "chunk_token_budget (independent)"
        )
    if mean_request_tokens <= 0:
        raise ValueError(f"mean tokens per request must be positive, got {mean_request_tokens}")
    return max(1, math.floor(fill * room / mean_request_tokens + 1e-9))


class ChunkSpec(BaseModel):
    """One chunk: positions [start, stop) of requests.parquet, input rows first_row..last_row.
    Small and JSON-serializable, so it can be a Prefect task parameter."""

    model_config = ConfigDict(frozen=True)

    index: int
    start: int
    stop: int
    first_row: int
    last_row: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def label(self) -> str:
        """Task-name label, e.g. `chunk-0042 [4662-4772]` (input row numbers, inclusive)."""
        return f"chunk-{self.index:04d} [{self.first_row}-{self.last_row}]"


def chunk_count(n_requests: int, chunk_size: int, multiple_of: int = 1) -> int:
    """round-half-up(n / chunk_size), raised until no chunk exceeds floor(chunk_size x 1.02), then
    up to a multiple of `multiple_of` (conversation mode passes `parallel`: with P conversations in
    flight, a chunk count that is a multiple of P keeps every slot busy until the last round, which the
    taper then shortens: `tail_sizes`)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if n_requests <= 0:
        return 0
    count = max(1, (2 * n_requests + chunk_size) // (2 * chunk_size))
    largest = math.floor(chunk_size * MAX_OVERSIZE + 1e-9)
    while -(-n_requests // count) > largest:
        count += 1
    if multiple_of > 1:
        count = min(n_requests, -(-count // multiple_of) * multiple_of)
    return count


def chunk_multiple(params: RunParams) -> int:
    """Conversation mode runs `parallel` conversations at once; independent mode shares slots per request."""
    return params.parallel if params.mode == "conversation" else 1


def tail_sizes(n_requests: int, chunk_size: int, parallel: int) -> list[int]:
    """Conversation mode's taper (see the module docstring): `parallel` chunks of chunk_size // 2 rows, then
    `parallel` of chunk_size // 4, ... down to 1 row. None ([]) with one conversation at a time, chunks of
    one row, or a run that does not hold a whole round of full chunks before its tail."""
    if parallel <= 1 or chunk_size <= 1:
        return []
    sizes: list[int] = []
    size = chunk_size // 2
    while size >= 1:
        sizes += [size] * parallel
        size //= 2
    return sizes if n_requests - sum(sizes) >= parallel * chunk_size else []


def chunk_bounds(n_requests: int, chunk_size: int, multiple_of: int = 1, *, taper: bool = False) -> list[int]:
    """Positions where the chunks start, then `n_requests`: rows spread evenly over `chunk_count` chunks, then
    (with `taper`, conversation mode's `multiple_of` = parallel) the tail of `tail_sizes`."""
    tail = tail_sizes(n_requests, chunk_size, multiple_of) if taper else []
    head = n_requests - sum(tail)
    count = chunk_count(head, chunk_size, multiple_of)
    bounds = [i * head // count for i in range(count + 1)] if count else [0]
    for size in tail:
        bounds.append(bounds[-1] + size)
    return bounds


def plan_chunks(n_requests: int, chunk_size: int, rows: Sequence[int] | pa.Array | None = None,
                multiple_of: int = 1, *, taper: bool = False) -> list[ChunkSpec]:
    """The chunks of `n_requests` accepted requests (`chunk_bounds`). `rows` maps positions to input row
    numbers (InputSummary.accepted_rows, the `_row` column); without it they are the positions."""
    bounds = chunk_bounds(n_requests, chunk_size, multiple_of, taper=taper)
    count = len(bounds) - 1
    if rows is not None and len(rows) != n_requests:
        raise ValueError(f"rows has {len(rows)} entries for {n_requests} requests")

    def row(pos: int) -> int:
        if rows is None:
            return pos
        value = rows[pos]
        return int(value.as_py() if isinstance(value, pa.Scalar) else value)

    return [ChunkSpec(index=i, start=bounds[i], stop=bounds[i + 1], first_row=row(bounds[i]),
                      last_row=row(bounds[i + 1] - 1)) for i in range(count)]


def mean_request_tokens(summary: InputSummary, expected_answer_tokens: int, chars_per_token: float) -> float:
    """Mean estimated tokens per accepted request: (prompt + the row's own system prompt, if any)
    characters / chars_per_token, plus the expected answer tokens."""
    if not summary.accepted:
        return float(expected_answer_tokens)
    chars = pc.sum(summary.prompt_chars).as_py() or 0
    if summary.system_chars is not None:
        chars += pc.sum(summary.system_chars).as_py() or 0
    return chars / summary.accepted / chars_per_token + expected_answer_tokens


def chunk_size_for(summary: InputSummary, params: RunParams, *, system_prompt: str,
                   chars_per_token: float | None = None) -> tuple[int, bool]:
    """(requests per chunk, whether computed): params.chunk_size, else `chunk_size_rule` over
    num_ctx (conversation) or chunk_token_budget (independent). The one place a run and
    `chunkwise plan` size chunks. chars_per_token defaults to params.chars_per_token."""
    if params.chunk_size is not None:
        return params.chunk_size, False
    cpt = chars_per_token or params.chars_per_token
    budget = params.num_ctx if params.mode == "conversation" else params.chunk_token_budget
    mean = mean_request_tokens(summary, params.expected_answer_tokens, cpt)
    return chunk_size_rule(budget, estimate_tokens(len(system_prompt), cpt), mean), True
