"""Deterministic synthetic request sets for the demo, tests and benchmarks.

What the generated file looks like (`write_sample`):

- columns `id` (string `req-0000001`, ...), `prompt` (string), `category` (string) and `priority`
  (int8) -- the last two are carried through to the results untouched; there is no `system` column;
- prompt lengths follow a log-normal distribution (sigma `LOG_SIGMA`) taken at evenly spaced
  quantiles and shuffled, then scaled so that the mean is exactly `TARGET_MEAN_CHARS` characters for
  any row count (about 1 row in 1,000 is above 20,000 characters, the longest of 170,000 rows about
  52,000). The reference design is stated in chunkwise's own estimate (4 characters per token): a
  mean of 702 estimated tokens, a 2,400-token system prompt, num_ctx 128,000 and 200 expected answer
  tokens give 111 requests per chunk and 1,532 chunks for 170,000 rows;
- every prompt starts with its id, so prompts are unique;
- rows are of mixed density on purpose, as real request sets are (`KINDS`): customer-service prose,
  code (Python and SQL snippets), records (CSV lines of ids, dates and amounts), Chinese prose, and
  prose with an embedded snippet or table. A real tokenizer spends very different numbers of tokens on
  the same number of characters of each (Gemma 3 through Ollama: about 6 characters per token for
  English prose, 2.2 for code, 1.8 for Chinese, 1 for digits), so no single characters-per-token
  ratio, the client's included, matches every row. The dense kinds only get rows up to
  `DENSE_MAX_CHARS`; the long tail is prose, as long documents are;
- each kind's text is a slice of a corpus built once per process from a fixed seed (no per-word
  Python work per row, so 170,000 rows take seconds).

The same `(rows, seed)` gives a byte-identical file (fixed Parquet writer settings, no timestamps).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from chunkwise.inputs.sample_text import corpus, row_body, row_kind
from chunkwise.tokens import DEFAULT_CHARS_PER_TOKEN

#: Mean prompt length in characters: 702 estimated tokens at 4 characters per token, so that mean
#: tokens per request = 702 + 200 expected answer tokens = 902 and floor(0.8 x 125,600 / 902) = 111.
TARGET_MEAN_CHARS = 2808
#: Spread of the log-normal prompt-length distribution (natural log units).
LOG_SIGMA = 0.7
#: Prompt length bounds in characters before the final rescale.
MIN_CHARS, MAX_CHARS = 96, 80_000
#: Rows per Parquet row group of the sample file (and per generation batch).
ROW_GROUP_ROWS = 16_384
CATEGORIES = ("billing", "shipping", "returns", "technical", "account", "other")
CATEGORY_WEIGHTS = (30, 25, 15, 15, 10, 5)
PRIORITY_WEIGHTS = (10, 30, 35, 20, 5)  # priorities 1..5
SYSTEM_PROMPT_HEAD = (
    "You are a careful assistant that answers customer service requests. Read each request, "
    "answer it in at most three sentences, and keep facts from the request unchanged. "
    "Background notes follow.\n\n"
)


def prompt_lengths(rows: int, seed: int = 0) -> list[int]:
    """Prompt lengths in characters for `rows` rows; their sum is exactly rows x TARGET_MEAN_CHARS."""
    if rows <= 0:
        return []
    dist = NormalDist()
    # Median chosen so the log-normal's mean is TARGET_MEAN_CHARS; the rescale below makes it exact.
    median = TARGET_MEAN_CHARS / math.exp(LOG_SIGMA**2 / 2)
    raw = [min(MAX_CHARS, max(MIN_CHARS, median * math.exp(LOG_SIGMA * dist.inv_cdf((i + 0.5) / rows))))
           for i in range(rows)]
    random.Random(seed).shuffle(raw)
    target = rows * TARGET_MEAN_CHARS
    scale = target / sum(raw)
    lengths = [max(MIN_CHARS, int(x * scale)) for x in raw]
    residual = target - sum(lengths)
    step = 1 if residual > 0 else -1
    i = 0
    while residual != 0:  # spread the rounding remainder one character per row
        if lengths[i % rows] + step >= MIN_CHARS:
            lengths[i % rows] += step
            residual -= step
        i += 1
    return lengths


def sample_rows(lengths: list[int], seed: int, start: int, stop: int) -> dict[str, list[Any]]:
    """Columns of rows [start, stop) of the sample set whose prompt lengths are `lengths`
    (`prompt_lengths(rows, seed)`) as Python lists."""
    rng = random.Random(f"{seed}:{start}")
    ids, prompts, categories, priorities = [], [], [], []
    cats = rng.choices(CATEGORIES, weights=CATEGORY_WEIGHTS, k=stop - start)
    prios = rng.choices(range(1, 6), weights=PRIORITY_WEIGHTS, k=stop - start)
    for j, row in enumerate(range(start, stop)):
        rid = f"req-{row + 1:07d}"
        head = f"Request {rid}, {cats[j]}, priority {prios[j]}. "
        body_len = max(1, lengths[row] - len(head))
        ids.append(rid)
        prompts.append(head + row_body(row_kind(rng, lengths[row]), rng, body_len))
        categories.append(cats[j])
        priorities.append(prios[j])
    return {"id": ids, "prompt": prompts, "category": categories, "priority": priorities}


@dataclass(frozen=True)
class SampleStats:
    path: str
    rows: int
    bytes: int
    mean_prompt_chars: float


def write_sample(path: str | os.PathLike[str], rows: int, seed: int = 0) -> SampleStats:
    """Write the sample set `(rows, seed)` to `path` (atomically: temp file, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    path = Path(path)
    schema = pa.schema([("id", pa.string()), ("prompt", pa.large_string()), ("category", pa.string()),
                        ("priority", pa.int8())])
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    lengths = prompt_lengths(rows, seed)
    total_chars = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=["category"]) as writer:
            for start in range(0, rows, ROW_GROUP_ROWS):
                cols = sample_rows(lengths, seed, start, min(rows, start + ROW_GROUP_ROWS))
                total_chars += sum(map(len, cols["prompt"]))
                writer.write_table(pa.table(cols, schema=schema), row_group_size=ROW_GROUP_ROWS)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return SampleStats(str(path), rows, path.stat().st_size, total_chars / rows)


def sample_system_prompt(tokens: int = 2400) -> str:
    """A fixed English system prompt of `tokens` tokens as chunkwise estimates them (`tokens` x 4.0
    characters; a real tokenizer counts it differently, Gemma 3's about a third fewer)."""
    if tokens < 1:
        raise ValueError(f"tokens must be at least 1, got {tokens}")
    chars = round(tokens * DEFAULT_CHARS_PER_TOKEN)
    text = SYSTEM_PROMPT_HEAD + corpus()[: chars + 64]
    return text[:chars]
